"""layertrim.bindings: framework bindings (torch) and the command line."""
