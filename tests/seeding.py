"""Local seeding helpers for the tests (see conftest.py: seeds and the global-RNG guard)."""
from contextlib import contextmanager


@contextmanager
def torch_seed(seed):
    """Run the block with torch's global generator seeded to ``seed``, restoring it afterwards.

    For code that can only draw from the global generator: module construction
    (``nn.Linear`` / ``nn.Conv2d`` initialise their weights from it) and library
    functions that call ``torch.manual_seed`` themselves.
    """
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def torch_generator(seed):
    """A local ``torch.Generator`` seeded to ``seed`` (for ``torch.randn(..., generator=g)``)."""
    import torch

    return torch.Generator().manual_seed(seed)


def keep_global_torch_rng(fn):
    """``fn`` run on a forked copy of torch's global generator, which it then leaves unchanged.

    For library functions that draw from the global generator on their own
    (constructing modules whose default initialisation is then overwritten).
    """
    import functools

    import torch

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with torch.random.fork_rng():
            return fn(*args, **kwargs)

    return wrapped
