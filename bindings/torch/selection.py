"""Which layers to prune: names, globs and regexes, an ignore list, and the
default exclusions of language models.

A selector is an exact qualified name (``"model.layers.0.mlp.up_proj"``), a
glob (``"model.layers.*.mlp.*"``, :mod:`fnmatch` rules: ``*`` also crosses
dots) or a regular expression prefixed with ``re:`` (``"re:.*\\.(q|k)_proj$"``,
matched against the whole name). ``layers=None`` selects every prunable layer
(see :mod:`.layers`) except, for a model with output embeddings (a
transformers language model's ``lm_head``), that head: pruning it is rarely
wanted and it is usually tied to the input embedding. Name it in ``layers``
to prune it anyway.
"""
from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict

from torch import nn

from layertrim.solvers.base.errors import ParameterError

from .layers import check_supported, kind_of, named_layers


def prunable_layers(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    """Every submodule (and pseudo-layer, see :mod:`.layers`) of a prunable kind, by qualified name, in
    registration order."""
    return OrderedDict((n, m) for n, m in named_layers(model).items() if n and kind_of(m) is not None)


def matcher(selector: str):
    if not isinstance(selector, str) or not selector:
        raise ParameterError(f"a layer selector must be a non-empty string, got {selector!r}")
    if selector.startswith("re:"):
        try:
            pattern = re.compile(selector[3:])
        except re.error as exc:
            raise ParameterError(f"layer selector {selector!r} is not a valid regular expression: {exc}") from None
        return lambda name: pattern.fullmatch(name) is not None
    if any(c in selector for c in "*?["):
        return lambda name: fnmatch.fnmatchcase(name, selector)
    return lambda name: name == selector


def _as_list(selectors, what):
    if selectors is None:
        return []
    if isinstance(selectors, str):
        return [selectors]
    selectors = list(selectors)
    if what == "layers" and not selectors:
        raise ParameterError("layers is empty")
    return selectors


def default_ignored(model: nn.Module) -> list:
    """Names left out when ``layers=None``: the output embedding of a language model."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return [n for n, m in model.named_modules() if head is not None and m is head]


def select_layers(model: nn.Module, layers=None, ignore=None) -> "OrderedDict[str, nn.Module]":
    """The layers to prune, by qualified name, in registration order.

    Every selector in ``layers`` and ``ignore`` must match at least one
    prunable layer, an exact name in ``layers`` must be of a prunable kind, and
    the selection minus ``ignore`` must not be empty; each is a ParameterError
    listing the prunable layers.
    """
    named = OrderedDict((n, m) for n, m in named_layers(model).items() if n)
    prunable = prunable_layers(model)
    if not prunable:
        raise ParameterError("the model has no layer of a prunable kind (Linear, Conv1d, Conv2d, Conv1D)")
    chosen = OrderedDict()
    if layers is None:
        skip = set(default_ignored(model))
        chosen.update((n, m) for n, m in prunable.items() if n not in skip and kind_of(m).by_default)
    for selector in _as_list(layers, "layers"):
        match = matcher(selector)
        if not any(c in selector for c in "*?[") and not selector.startswith("re:"):
            if selector not in named:
                raise ParameterError(f"no layer named {selector!r} in the model; prunable layers are "
                                     f"{list(prunable)}")
            check_supported(selector, named[selector])
        hits = [n for n in prunable if match(n)]
        if not hits:
            raise ParameterError(f"layer selector {selector!r} matches no prunable layer; prunable layers are "
                                 f"{list(prunable)}")
        chosen.update((n, prunable[n]) for n in hits)
    for selector in _as_list(ignore, "ignore"):
        match = matcher(selector)
        if not any(match(n) for n in prunable):  # a misspelled name would silently prune the layer it meant
            raise ParameterError(f"ignore selector {selector!r} matches no prunable layer; prunable layers are "
                                 f"{list(prunable)}")
        for n in [n for n in chosen if match(n)]:
            del chosen[n]
    if not chosen:
        raise ParameterError(f"no layer is left to prune after ignore={ignore!r}; prunable layers are "
                             f"{list(prunable)}")
    return OrderedDict((n, chosen[n]) for n in prunable if n in chosen)
