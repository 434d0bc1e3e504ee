"""Example material, never imported by the library: the reference MNIST network
(:mod:`.mnist`), the trained ResNet (:mod:`.resnet`), the demo (:mod:`.demo`)
and the gRDA experiment (:mod:`.grda_experiment`)."""
