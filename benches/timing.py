"""Timing shared by the Python benchmark scripts."""

import time


def timed(fn, runs, warm):
    """Runs `fn` `warm` times unmeasured, then `runs` times: median and fastest, in ms."""
    times = []
    for i in range(runs + warm):
        t = time.perf_counter()
        fn()
        if i >= warm:
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"median_ms": round(times[len(times) // 2], 2), "min_ms": round(times[0], 2)}
