"""Hard thresholding: supports under a sparsity pattern and fits on them.

- :func:`project`: exact projection onto a pattern (unstructured top-k, per
  output, N:M, whole input rows / output columns);
- :func:`refit`: ``min (1/2P)||X W + 1 b^T - Y||_F^2`` on a fixed support;
- :func:`magnitude`: projection of given weights (+ refit);
- :func:`iht`: ``min (1/2P)||X W + 1 b^T - Y||_F^2  s.t.  W in pattern`` by
  accelerated iterative hard thresholding (:mod:`.iteration`), with exact
  exchange refinement (:mod:`.swaps`) and N:M input permutations
  (:mod:`.permutation`); :func:`~.iht_batch.iht_batch` runs it on many small
  problems at once (the channels of a depthwise conv);
- :func:`l0_admm`: the same problem by ADMM with a growing penalty
  (:mod:`.admm_iteration`), then refits and exchanges: the lowest loss;
- :func:`backward_group_selection`: greedy least-squares channel selection;
- :func:`wanda`, :func:`sparsegpt`: the one-shot baselines of LLM pruning
  (Wanda's ``|W_ij| ||x_i||`` per output; SparseGPT's blocked OBS sweep).
"""
from .admm_l0 import l0_admm
from .channel_selection import backward_group_selection
from .iht import iht
from .magnitude import magnitude
from .obs import sparsegpt
from .permutation import nm_permutation
from .projection import project
from .refit import refit
from .wanda import wanda
