"""The Numba warm-up, shared by the tests and the notebooks (``make test`` runs both).

It sits at the repository root and runs in the set-up of a process's first
item, whichever folder it comes from (a notebook item takes no fixtures).
"""
import fcntl
import os
import tempfile

_WARM = []


def pytest_runtest_setup(item):
    if not _WARM:
        _WARM.append(True)
        _warm_kernels()


def _warm_kernels():
    """Compile (or load cached) Numba kernels once per session, the work split between xdist workers.

    A cold cache costs about 90 s of compilation. Each kernel module is one
    job guarded by a lock file: worker ``gwK`` walks the jobs forwards (even
    ``K``) or backwards (odd ``K``), compiles those no other worker holds and
    comes back for the held ones, which it then loads from the shared cache.
    Two workers compile disjoint halves instead of everything twice.
    """
    from layertrim.solvers.base.warmup import warmup_jobs

    jobs = warmup_jobs()
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:  # one process: nothing to share
        for _, job in jobs:
            job()
        return
    if int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]) % 2:
        jobs = jobs[::-1]
    folder = os.path.join(tempfile.gettempdir(), f"layertrim-warmup-{run_id}")
    os.makedirs(folder, exist_ok=True)
    held = []
    for name, job in jobs:
        lock = open(os.path.join(folder, name), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another worker compiles it: come back when it is done
            held.append((lock, job))
            continue
        with lock:
            job()
    for lock, job in held:
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            job()
