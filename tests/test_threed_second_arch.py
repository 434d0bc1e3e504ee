"""Three-dimensional pruning on the second architecture of the benchmark: three stages of
three BasicBlocks (seven removable blocks). The single-dimension baselines pick, by brute
force, the configuration with the most counted FLOPs within the budget, and all four
plans of the comparison meet it."""
import pytest

torch = pytest.importorskip("torch")

from layertrim.bindings.torch import (  # noqa: E402
    ResNet,
    compare_plans,
    count_flops,
    limit_threads,
    prune_depth,
    prune_resolution,
    single_axis_prune,
)
from seeding import torch_generator, torch_seed  # noqa: E402

SIZE = 8


@pytest.fixture
def deep_net(seed):
    with torch_seed(seed):  # module init draws from torch's global generator
        return ResNet(depths=(3, 3, 3), widths=(2, 4, 8)).eval()


@pytest.fixture
def data(seed):
    g = torch_generator(seed + 1)
    X = torch.randn(32, 1, SIZE, SIZE, generator=g)
    return X, (X.mean(dim=(1, 2, 3)) > 0).long()


def test_six_removable_blocks(deep_net):
    # all but the first block of the two stages that halve the resolution and double the width
    assert deep_net.base_removable == 7


@pytest.mark.parametrize("budget", [0.5, 0.7])
def test_depth_and_resolution_baselines_are_the_brute_force_best(deep_net, data, budget):
    X, _ = data
    base = count_flops(deep_net, X[:1]).flops
    with limit_threads(1):
        _, d, d_frac = single_axis_prune(deep_net, "depth", budget, data, epochs=0, n_calibration=16)
        _, r, r_frac = single_axis_prune(deep_net, "resolution", budget, data, epochs=0)
        depth = {k: count_flops(prune_depth(deep_net, k / 7, X[:16]), X[:1]).flops / base for k in range(8)}
        res = {p: count_flops(prune_resolution(deep_net, p / SIZE, base_size=SIZE), X[:1]).flops / base
               for p in range(1, SIZE + 1)}
    k_best = max((k for k in depth if depth[k] <= budget), key=depth.get)
    p_best = max((p for p in res if res[p] <= budget), key=res.get)
    assert (d, d_frac) == (k_best / 7, depth[k_best])
    assert (r, r_frac) == (p_best / SIZE, res[p_best])


def test_all_plans_meet_the_budget(deep_net, data):
    with limit_threads(1):
        rows, report = compare_plans(deep_net, data, data, data, flops_budget=0.5, final_epochs=1,
                                     trajectory=(0.7, 0.5), finetune_epochs=1, n_calibration=16, refine=0,
                                     progress=False)
    assert [r["plan"] for r in rows] == ["unpruned", "3-D (fitted)", "depth only", "width only", "resolution only"]
    assert all(r["flops"] <= 0.5 for r in rows[1:])
    assert report.model(data[0]).shape == (32, 10)
