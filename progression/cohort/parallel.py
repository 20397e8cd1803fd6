"""Decode many images in worker processes, in order, with an optional progress bar.

Image decoding (DICOM parsing, PNG inflation, resizing) holds the GIL, so threads do not
help; worker processes do. Workers are started with ``spawn`` because the parent may
hold threads (torch, tqdm) that make ``fork`` unsafe. Small jobs run in-process: starting
a worker costs a second or two.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# Rough serial decode cost (2-core CPU): ~3 ms per small image plus ~10 ms per MB of file.
# Starting worker processes costs 1-6 s (imports; more on a busy machine), so jobs
# estimated under this stay in-process.
POOL_BREAK_EVEN_S = 10.0
# Fewer items than this get no progress bar (a bar for a handful of files is noise).
MIN_ITEMS_FOR_BAR = 50


def default_workers() -> int:
    """CPU cores this process may use (at most 8: decoding is disk-bound beyond that)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def auto_workers(paths: Sequence[str]) -> int:
    """Worker processes worth starting to decode ``paths``: 1 for small jobs, else one per core."""
    seconds = 0.0
    for path in paths:
        try:
            seconds += 0.003 + os.stat(path).st_size / 100e6
        except OSError:
            continue
        if seconds > POOL_BREAK_EVEN_S:
            return default_workers()
    return 1


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    progress: bool = True,
    desc: str = "",
) -> Iterator[R]:
    """``fn(item)`` for every item, in order; ``fn`` must be a picklable top-level function.

    ``workers > 1`` uses that many processes (see :func:`auto_workers` for a good count).
    """
    n = len(items)
    workers = max(1, min(workers, n))
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress or n < MIN_ITEMS_FOR_BAR)
    try:
        if workers == 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        context = multiprocessing.get_context("spawn")
        chunksize = max(1, min(16, n // (4 * workers)))
        done = 0
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                for result in pool.map(fn, items, chunksize=chunksize):
                    yield result
                    done += 1
                    bar.update()
        except BrokenProcessPool:
            # Workers cannot start when __main__ is not importable (`python - < script`)
            # or were killed (out of memory): finish in this process rather than fail.
            logger.warning("image worker processes failed; continuing in one process")
            for item in items[done:]:
                yield fn(item)
                bar.update()
    finally:
        bar.close()
