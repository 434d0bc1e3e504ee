"""layertrim.bindings.torch: capture layer data from torch models, prune them with
the core solvers, write sparse weights back, fine-tune with masks held, the gRDA
optimizer and model surgery for three-dimensional pruning."""
from .threads import limit_threads

# --- binding exports: one line per module --------------------------------------
# --- end of binding exports ----------------------------------------------------
