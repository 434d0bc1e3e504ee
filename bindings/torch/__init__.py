"""layertrim.bindings.torch: capture layer data from torch models, prune them with
the core solvers, write sparse weights back, fine-tune with masks held, the gRDA
optimizer and model surgery for three-dimensional pruning."""
from .threads import limit_threads

# --- binding exports: one line per module --------------------------------------
from .grda import GRDA, SparsityLogger
from .allocation import erk_sparsity
from .capture import LayerData, capture, find_layers, relu_layers
from .finetune import fine_tune
from .masks import LayerCount, ModelSparsity, sparsity
from .prune import make_permanent, prune
from .report import LayerReport, PruneReport
from .storage import load_sparse, save_sparse
from .resnet import BasicBlock, ResNet, mnist_images, trained_resnet
from .flops import FlopsReport, count_flops, resnet_flops_model
from .surgery import Resized, block_scores, prune_3d, prune_depth, prune_resolution, prune_width
from .threed import ThreeDReport, compare_plans, plot_accuracy_surface, single_axis_prune, three_d_prune
# --- end of binding exports ----------------------------------------------------
