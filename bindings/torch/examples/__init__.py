"""Example material, never imported by the library: the reference MNIST network
(:mod:`.mnist`), the trained ResNet (:mod:`.resnet`), the demo (:mod:`.demo`)
the gRDA experiment (:mod:`.grda_experiment`) and the
sample-complexity experiment (:mod:`.sample_complexity`)."""
