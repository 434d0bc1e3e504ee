"""layertrim.bindings.torch: capture layer data from torch models, prune them with
the core solvers, write sparse weights back, fine-tune with masks held.

- the pruning pipeline: :mod:`.capture`, :mod:`layertrim.bindings.methods` (one adapter per
  method in one registry), :mod:`.prune`, :mod:`.report`, :mod:`.masks`,
  :mod:`.storage`, :mod:`.finetune`, :mod:`.allocation`;
- :mod:`.optim`: the gRDA optimizer;
- :mod:`.structure`: FLOPs, surgery and three-dimensional pruning;
- :mod:`.examples`: the reference networks and the demo (not imported here).
"""
from .threads import limit_threads

from .allocation import erk_sparsity
from .capture import LayerData, capture, find_layers, relu_layers
from .finetune import fine_tune
from .masks import LayerCount, ModelSparsity, make_permanent, sparsity
from ..methods import Method, register_method, registered_methods
from .optim import GRDA, SparsityLogger
from .prune import prune
from .report import LayerReport, PruneReport
from .storage import load_sparse, save_sparse
from .structure import (
    BasicBlock,
    FlopsReport,
    Resized,
    ResNet,
    ThreeDReport,
    block_scores,
    compare_plans,
    count_flops,
    plot_accuracy_surface,
    prune_3d,
    prune_depth,
    prune_resolution,
    prune_width,
    resnet_flops_model,
    single_axis_prune,
    three_d_prune,
)
from .training import accuracy, train
from .sparse_inference import to_sparse
from .sparse_linear import SparseLinear
from .structured import prune_structured
