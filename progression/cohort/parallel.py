"""Decode many images in worker processes, in order, with an optional progress bar.

Image decoding (DICOM parsing, PNG inflation, resizing) holds the GIL, so threads do not
help; worker processes do. Workers are started with ``spawn`` because the parent may
hold threads (torch, tqdm) that make ``fork`` unsafe. Small jobs run in-process: starting
a worker costs about a second.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

# Below this many items an automatic worker count decodes in-process.
MIN_ITEMS_FOR_POOL = 32
# Items shown without a progress bar (a bar for a handful of files is noise).
MIN_ITEMS_FOR_BAR = 50


def default_workers() -> int:
    """CPU cores this process may use (at most 8: decoding is disk-bound beyond that)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int | None = None,
    progress: bool = True,
    desc: str = "",
) -> Iterator[R]:
    """``fn(item)`` for every item, in order; ``fn`` must be a picklable top-level function.

    ``workers=None`` picks :func:`default_workers` and stays in-process for fewer than
    :data:`MIN_ITEMS_FOR_POOL` items; an explicit ``workers > 1`` always uses processes.
    """
    n = len(items)
    if workers is None:
        workers = default_workers() if n >= MIN_ITEMS_FOR_POOL else 1
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
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for result in pool.map(fn, items, chunksize=chunksize):
                yield result
                bar.update()
    finally:
        bar.close()
