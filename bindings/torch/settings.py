"""Per-layer settings of :func:`~layertrim.bindings.torch.prune`, resolved and checked
before any work: one :class:`~layertrim.bindings.methods.LayerSpec` per layer,
and the layers that cannot be pruned on their own (tied weights)."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.base.validation import check_scalar, check_sparsity

from layertrim.solvers.base.errors import ShapeError
from layertrim.solvers.base.patterns import parse_pattern

from ..methods import LayerSpec
from .layers import input_features, named_layers, weight_names
from .selection import matcher


def _per_layer(value, name):
    return value.get(name) if isinstance(value, dict) else value


def layer_specs(names, *, method, sparsity, eps, lam, pattern, refit, damping, solver_options) -> "OrderedDict[str, LayerSpec]":
    """Resolve global and per-layer settings into one :class:`LayerSpec` per layer.

    ``method`` is a name or a dict layer -> name or layer -> dict of settings
    (``method``, ``sparsity``, ``eps``, ``lam``, ``pattern``, ``refit``, ``damping`` and
    solver options); ``sparsity``/``eps``/``lam`` may be dicts layer -> value.
    """
    specs = OrderedDict()
    for name in names:
        m = _per_layer(method, name)
        overrides = {}
        if isinstance(m, dict):
            overrides = dict(m)
            m = overrides.pop("method", None)
        if m is None:
            raise ParameterError(f"no method given for layer {name!r}")
        spec = LayerSpec(
            method=m,
            sparsity=overrides.pop("sparsity", _per_layer(sparsity, name)),
            eps=overrides.pop("eps", _per_layer(eps, name)),
            lam=overrides.pop("lam", _per_layer(lam, name)),
            pattern=overrides.pop("pattern", _per_layer(pattern, name)),
            refit=bool(overrides.pop("refit", _per_layer(refit, name))),
            damping=check_scalar(overrides.pop("damping", _per_layer(damping, name)), f"damping of layer {name!r}",
                                 low=0.0),
            options={**solver_options, **overrides},
        )
        spec.check(name)
        if spec.sparsity is not None:
            check_sparsity(spec.sparsity)
        if spec.eps is not None:
            check_scalar(spec.eps, f"eps of layer {name!r}", low=0.0, low_open=True)
        if spec.lam is not None:
            check_scalar(spec.lam, f"lam of layer {name!r}", low=0.0)
        specs[name] = spec
    return specs


def per_layer(value, names, what):
    """A dict setting resolved to ``layer -> value`` (other values as they are).

    Keys are layer names, globs or ``re:`` regexes (:mod:`.selection`), e.g.
    ``{"*.mlp.*": 0.6, "*.self_attn.*": 0.4}``; an exact name wins over a
    pattern, a later pattern over an earlier one. A key that matches no layer
    being pruned is a ParameterError.
    """
    if not isinstance(value, dict):
        return value
    out, exact = {}, {}
    for key, v in value.items():
        hits = [n for n in names if n == key] or [n for n in names if matcher(key)(n)]
        if not hits:
            raise ParameterError(f"{what} names layers [{key!r}] that are not being pruned; layers are {list(names)}")
        for n in hits:
            (exact if n == key else out)[n] = v
    return {**out, **exact}


def tied_layers(model: nn.Module, names) -> dict:
    """Layers among ``names`` whose weight tensor is also held by another module or name.

    Returns ``name -> reason``. Writing a solution into a tied weight would
    change the other holder too (an embedding tied to ``lm_head``, a weight
    shared by two layers), so such layers are skipped and reported.
    """
    holders = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module.named_parameters(recurse=False, remove_duplicate=False):
            holders.setdefault(id(p), []).append(f"{mod_name}.{p_name}" if mod_name else p_name)
    modules = named_layers(model)
    tied = {}
    for name in names:
        module = modules[name]
        weight = getattr(module, "weight_orig", None)
        weight = module.weight if weight is None else weight
        others = sorted(set(holders.get(id(weight), [])) - weight_names(name, module))
        if others:
            tied[name] = f"weight tied to {', '.join(others)}"
    return tied


def pattern_misfits(found, specs, strict: bool) -> dict:
    """Layers whose input count cannot carry their N:M pattern: ``name -> reason``
    (a ShapeError instead when ``strict``). A 3x3 depthwise conv (9 inputs)
    or an RGB stem (27) under 2:4 is the usual case."""
    out = {}
    for name, spec in specs.items():
        pattern = parse_pattern(spec.pattern)
        K = input_features(found[name])
        if pattern.kind == "n:m" and K % pattern.m:
            reason = f"pattern {pattern} needs the input count ({K}) to be a multiple of {pattern.m}"
            if strict:
                raise ShapeError(f"layer {name!r}: {reason}; pass strict=False to leave such layers dense")
            out[name] = f"{reason}; left dense"
    return out
