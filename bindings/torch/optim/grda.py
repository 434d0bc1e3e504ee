"""gRDA as a ``torch.optim.Optimizer``, and a logger of parameter sparsity.

The update is the one of :mod:`layertrim.solvers.grda`, applied to every
parameter tensor on its own: an accumulator ``a`` started at the tensor's
value at its first step, a per-tensor step count ``n`` and a running
threshold ``T``,

``a <- a - lr * grad``,  ``T <- T + c lr^(mu+1/2) (n^mu - (n-1)^mu)``,
``p <- sign(a) max(|a| - T, 0)``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import softshrink

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.grda import threshold_increment
from layertrim.solvers.base.validation import check_scalar


class GRDA(torch.optim.Optimizer):
    """Generalized regularized dual averaging (directional pruning).

    Minimizes a training loss ``f(w)`` while driving weights to exact zeros
    through a soft threshold that grows as ``c lr^(1/2) (n lr)^mu`` after ``n``
    steps at constant ``lr``. ``c = 0`` is SGD without momentum or weight decay.

    Parameters
    ----------
    params : iterable of tensors or dicts
        Parameters or parameter groups (each group may set ``lr``, ``c``, ``mu``).
    lr : float
        Learning rate (> 0). Schedulers may change it between steps; each
        threshold increment uses the learning rate of its own step.
    c : float
        Threshold scale (>= 0); the published runs use 5e-4 to 5e-3.
    mu : float
        Threshold exponent (>= 0); the published runs use 0.4 to 0.85, mostly in (0.5, 1).

    Notes
    -----
    State per tensor: ``step`` (int, counts only the steps in which the tensor
    had a gradient), ``accumulator`` (tensor like the parameter) and
    ``threshold`` (float). The gradient is taken at the thresholded weights;
    the weights are then set from the accumulator, never by ``p -= lr * grad``.
    The work per step is a handful of whole-tensor operations; scalars stay
    on the host, so CUDA tensors need no synchronization.
    """

    def __init__(self, params, lr: float = 0.01, c: float = 0.0, mu: float = 0.7):
        defaults = {"lr": _check_lr(lr), "c": _check_c(c), "mu": _check_mu(mu)}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        for key, check in (("lr", _check_lr), ("c", _check_c), ("mu", _check_mu)):
            if key in param_group:
                check(param_group[key])
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure=None):
        """One gRDA step for every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, c, mu = group["lr"], group["c"], group["mu"]
            _check_lr(lr)
            params, accs, grads = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ParameterError("GRDA does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["threshold"] = 0.0
                    state["accumulator"] = p.detach().clone(memory_format=torch.preserve_format)
                params.append(p)
                accs.append(state["accumulator"])
                grads.append(p.grad)
            if not params:
                continue
            torch._foreach_add_(accs, grads, alpha=-lr)
            for p, acc in zip(params, accs):
                state = self.state[p]
                state["step"] += 1
                state["threshold"] += threshold_increment(lr, state["step"], c, mu)
                p.copy_(softshrink(acc, state["threshold"]))
        return loss


def _check_lr(lr):
    return check_scalar(lr, "lr", low=0.0, low_open=True)


def _check_c(c):
    return check_scalar(c, "c", low=0.0)


def _check_mu(mu):
    return check_scalar(mu, "mu", low=0.0)


def _zero_fraction(params) -> float:
    """Fraction of exactly-zero entries over all given tensors."""
    total = sum(p.numel() for p in params)
    if total == 0:
        return 0.0
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in params)
    return (total - nonzero) / total


class SparsityLogger:
    """Record the fraction of exactly-zero parameters during training.

    Parameters
    ----------
    model_or_params : nn.Module or iterable of tensors
        What to measure (all of a module's parameters, biases included, as in
        the published gRDA experiments).
    every : int
        With :meth:`attach`, record after every ``every``-th optimizer step.

    Attributes
    ----------
    steps : list of int
        Optimizer steps (or the ``step`` given to the call) at each record.
    sparsity : list of float
        Recorded fractions of zeros.

    Examples
    --------
    >>> logger = SparsityLogger(model)          # doctest: +SKIP
    >>> logger.attach(optimizer)                 # record after each step
    >>> for epoch in range(3): ...; logger(step=epoch)   # or by hand
    """

    def __init__(self, model_or_params, every: int = 1):
        if isinstance(model_or_params, nn.Module):
            params = list(model_or_params.parameters())
        else:
            params = list(model_or_params)
        if not params or not all(isinstance(p, torch.Tensor) for p in params):
            raise ParameterError("SparsityLogger needs a module or a non-empty iterable of tensors")
        self.params = params
        self.every = check_scalar(every, "every", low=1, integer=True)
        self.steps: list[int] = []
        self.sparsity: list[float] = []
        self._seen = 0

    def current(self) -> float:
        """Fraction of exactly-zero entries now."""
        return _zero_fraction(self.params)

    def __call__(self, step: int | None = None) -> float:
        """Record the current sparsity (at ``step``, or the record's index) and return it."""
        value = self.current()
        self.steps.append(len(self.steps) if step is None else int(step))
        self.sparsity.append(value)
        return value

    def attach(self, optimizer: torch.optim.Optimizer):
        """Record after every ``every``-th step of ``optimizer``; returns the hook handle."""

        def hook(opt, args, kwargs):
            self._seen += 1
            if self._seen % self.every == 0:
                self(self._seen)

        return optimizer.register_step_post_hook(hook)
