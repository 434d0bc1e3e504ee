"""Example material, never imported by the library: the reference MNIST network
(:mod:`.mnist`), the trained ResNet (:mod:`.resnet`), the demo (:mod:`.demo`)
the gRDA experiments (:mod:`.grda_experiment`, :mod:`.grda_cnn`) and the
sample-complexity experiment (:mod:`.sample_complexity`)."""
