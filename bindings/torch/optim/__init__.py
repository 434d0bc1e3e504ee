"""Optimizers that prune while training: gRDA (Chao et al., directional pruning),
``w_{n+1} = S_{g(n, gamma)}(w_0 - gamma sum_{i<=n} grad_i)`` with
``g(n, gamma) = c gamma^(1/2) (n gamma)^mu``."""
from .grda import GRDA, SparsityLogger
