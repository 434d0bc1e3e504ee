"""Pruning methods: one adapter module per method, registered here.

To add a method, write one module with a :class:`Method` (its ``solve``
maps a :class:`LayerProblem` onto core solver calls) and add one
``register_method`` line below; or, from user code, call
:func:`register_method` with your own :class:`Method`.
"""
from . import feta, iht, l0, l0_relu, lasso, magnitude, nettrim, nettrim_rw, sparsegpt, wanda
from .registry import (
    ALL_PATTERNS,
    LayerProblem,
    Method,
    Solution,
    get_method,
    keyword_options,
    register_method,
    registered_methods,
    unregister_method,
)
from .solve import STATUS_ORDER, GroupSolution, LayerSpec, solve_group, squared_error

register_method(magnitude.METHOD)
register_method(iht.METHOD)
register_method(l0.METHOD)
register_method(lasso.METHOD)
register_method(lasso.GROUP_METHOD)
register_method(nettrim.METHOD)
register_method(feta.METHOD)
register_method(wanda.METHOD)
register_method(sparsegpt.METHOD)
register_method(l0_relu.METHOD)
register_method(nettrim_rw.METHOD)
