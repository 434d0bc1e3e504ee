"""Structure tools: FLOPs counting, model surgery along depth, width and
resolution, and three-dimensional pruning (Wang et al.): fit
``acc(d, w, r)`` from pruned-and-fine-tuned samples and maximize it subject to
``FLOPs(d, w, r) <= budget``."""
from .flops import FlopsReport, count_flops, resnet_flops_model
from .resnet import BasicBlock, ResNet
from .surgery import Resized, block_scores, prune_3d, prune_depth, prune_resolution, prune_width
from .threed import ThreeDReport, three_d_prune
from .threed_compare import compare_plans, plot_accuracy_surface, single_axis_prune
