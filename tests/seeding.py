"""Local seeding helpers for the tests (see conftest.py: seeds and the global-RNG guard)."""
from contextlib import contextmanager


@contextmanager
def torch_seed(seed):
    """Run the block with torch's global generator seeded to ``seed``, restoring it afterwards.

    For code that can only draw from the global generator: module construction
    (``nn.Linear`` / ``nn.Conv2d`` initialise their weights from it). Library
    functions never touch it (they seed a forked or local generator).
    """
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def torch_generator(seed):
    """A local ``torch.Generator`` seeded to ``seed`` (for ``torch.randn(..., generator=g)``)."""
    import torch

    return torch.Generator().manual_seed(seed)

