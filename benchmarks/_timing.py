"""Shared timing helper of the benchmark scripts."""
import statistics
import time


def median_time(fn, repeats: int):
    """Run ``fn()`` ``repeats`` times; return ``(median seconds, last result)``."""
    times, out = [], None
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out
