"""Ctrl-C during a long compiled kernel.

A SIGINT that arrives while a Numba kernel runs is noticed when the kernel
returns, and Python reports it as ``SystemError: ... returned a result with an
exception set`` whose cause is the ``KeyboardInterrupt``. :func:`interruptible`
turns that back into the ``KeyboardInterrupt`` the user pressed.
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def interruptible():
    """Re-raise a ``KeyboardInterrupt`` hidden in a kernel's ``SystemError``."""
    try:
        yield
    except SystemError as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
