"""Masked retraining: minimize the training loss over the weights that survived pruning.

``min_theta  E[loss(model(x; theta), y)]  s.t.  theta_i = 0 for pruned i``.

Under a ``torch.nn.utils.prune`` reparametrization the forward uses
``weight_orig * weight_mask``, so pruned entries never move. Layers pruned
without it (e.g. after :func:`~layertrim.bindings.torch.make_permanent`) keep
their zero pattern because the zeros present at the start are written back
after every optimizer step (hard thresholding + retraining). The masked
out-projection of an ``nn.MultiheadAttention`` (read by the attention module,
never called) gets ``weight_orig * weight_mask`` recomputed before every
attention call while training.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from layertrim.solvers.base.errors import EmptyDataError, ParameterError
from layertrim.solvers.base.validation import check_scalar

from .masks import weight_sites


def _zero_masks(model: nn.Module):
    """(parameter, keep-mask) for plain weights of prunable layers that hold zeros."""
    out = []
    for owner, attr in weight_sites(model).values():
        w = owner._parameters.get(attr)
        if isinstance(w, nn.Parameter) and bool((w == 0).any()):
            out.append((w, (w != 0).detach().clone()))
    return out


def _unreached_masks(model: nn.Module) -> list:
    """``(attention, out_proj, pruning hooks)`` of every ``nn.MultiheadAttention`` whose ``out_proj``
    is under a ``torch.nn.utils.prune`` reparametrization: the attention module reads
    ``out_proj.weight`` without calling ``out_proj``, so the mask's own pre-hook never runs."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            hooks = [h for h in m.out_proj._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod)]
            if hooks:
                out.append((m, m.out_proj, hooks))
    return out


def _apply_masks(proj: nn.Module, hooks) -> None:
    """``proj.weight = weight_orig * weight_mask`` (what the pruning hooks do at a call of ``proj``)."""
    for h in hooks:
        h(proj, ())


def fine_tune(
    model: nn.Module,
    loader,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    loss_fn=None,
    optimizer=None,
    progress: bool = False,
) -> nn.Module:
    """Train ``model`` on ``loader`` for ``epochs`` with its zero pattern held.

    Parameters
    ----------
    model : nn.Module
    loader : iterable of (inputs, targets)
    epochs : int
    lr : float
        Learning rate of the default optimizer (Adam).
    loss_fn : callable, optional
        ``loss_fn(outputs, targets)``; default cross-entropy.
    optimizer : torch.optim.Optimizer or callable, optional
        An optimizer over ``model``'s parameters, or a factory
        ``params -> optimizer``; default ``Adam(lr=lr)``.
    progress : bool
        A tqdm bar over batches.

    Returns
    -------
    model (in eval mode)
    """
    epochs = check_scalar(epochs, "epochs", low=1, integer=True)
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ParameterError("fine_tune: the model has no trainable parameters")
    opt = _optimizer(optimizer, params, lr)
    held = _zero_masks(model)
    unreached = _unreached_masks(model)
    handles = [attn.register_forward_pre_hook(lambda mod, args, p=proj, h=hooks: _apply_masks(p, h))
               for attn, proj, hooks in unreached]
    device = params[0].device
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.train()
        for _ in range(epochs):
            _epoch(model, loader, loss_fn, opt, held, device, progress)
    except BaseException:  # the model's train/eval modes as they were
        for m, training in modes:
            m.training = training
        raise
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():  # the weights the attention modules read: current, outside any graph
            for _, proj, hooks in unreached:
                _apply_masks(proj, hooks)
    model.eval()
    return model


def _optimizer(optimizer, params, lr):
    if optimizer is None:
        return torch.optim.Adam(params, lr=lr)
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else optimizer(params)


def _epoch(model, loader, loss_fn, opt, held, device, progress) -> None:
    """One pass over ``loader``: a step per ``(inputs, targets)`` batch, masked weights re-zeroed."""
    from tqdm.auto import tqdm

    n = 0
    for batch in tqdm(loader, disable=not progress, leave=False, desc="fine-tune"):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ParameterError(
                f"fine_tune needs (inputs, targets) batches; got a {type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            )
        n += 1
        opt.zero_grad()
        try:
            inputs, targets = (torch.as_tensor(t).to(device) for t in batch)  # numpy batches too
            loss = loss_fn(model(inputs), targets)
        except (RuntimeError, TypeError, ValueError) as exc:  # wrong width, dtype or kind of target
            kinds = ", ".join(f"{type(t).__name__} {tuple(getattr(t, 'shape', ()))} {getattr(t, 'dtype', '')}"
                              for t in batch)
            raise ParameterError(f"fine_tune: batch {n} of the loader ({kinds}) is rejected by the model or "
                                 f"loss_fn: {exc}") from exc
        loss.backward()
        opt.step()
        with torch.no_grad():
            for w, keep in held:
                w.mul_(keep)
    if n == 0:
        raise EmptyDataError("the fine-tuning loader is empty")
