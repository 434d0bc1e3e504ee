"""Example material, never imported by the library: the reference MNIST network
(:mod:`.mnist`), the trained ResNet (:mod:`.resnet`), the byte-level Llama
(:mod:`.language_model`), the demo (:mod:`.demo`), and the papers' experiments:
gRDA (:mod:`.grda_experiment`, :mod:`.grda_cnn`), Net-Trim's sample complexity
(:mod:`.sample_complexity`) and total pruning time (:mod:`.total_time`,
:mod:`.threshold_depth`)."""
