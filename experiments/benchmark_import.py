"""Benchmark of ``progression import-dicom``: how fast DICOM headers are scanned (issue 15).

Writes N small DICOM files (16 x 16 pixels; the header scan does not read pixels, so
the pixel size does not matter) in a PACS-like tree of opaque nested directory and file
names, 500 patients with hands and feet at several visits, then times:

(a) the header scan alone (walk + ``read_header`` of every file), in this process and
    with worker processes (one per core);
(b) the whole import (scan, placing, copying the files, writing the tables).

    nice python experiments/benchmark_import.py                # 10,000 files
    nice python experiments/benchmark_import.py --files 2000 --work /tmp/bench_import

The tree is written once into ``--work`` (default: a temporary directory) and reused when
it is already there. Prints one line per measurement with files/s and the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REGIONS = (("HAND", "L"), ("HAND", "R"), ("FOOT", "L"), ("FOOT", "R"))


def write_tree(root: Path, n_files: int, seed: int = 0) -> None:
    """``n_files`` DICOM files under ``root``: 500 patients, 4 regions per visit, written with
    the tests' DICOM writer (tests/dicom_writer.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from dicom_writer import write_dicom

    rng = random.Random(seed)
    pixels = np.zeros((16, 16), dtype=np.uint16)
    for i in range(n_files):
        patient, visit, (part, side) = i // 20 % 500, i // 4 % 5, REGIONS[i % 4]
        folder = root / f"{rng.getrandbits(32):08X}" / f"{rng.getrandbits(16):04X}"
        folder.mkdir(parents=True, exist_ok=True)
        write_dicom(folder / f"IM{rng.getrandbits(40):010X}", pixels, spacing=None,
                    PatientID=f"BENCH{patient:05d}", PatientSex="F",
                    StudyDate=f"{2015 + visit + i // 10000}0{1 + patient % 9}15",
                    StudyInstanceUID=f"1.2.3.{patient}.{visit}", BodyPartExamined=part,
                    ImageLaterality=side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="DICOM files (default 10,000)")
    parser.add_argument("--work", type=Path, default=None, help="where the tree is written")
    args = parser.parse_args()

    from progression.cohort.parallel import default_workers, parallel_map
    from progression.ingest import import_dicom, read_header
    from progression.ingest.dicom_tree import find_files

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_import_"))
    src = work / f"export_{args.files}"
    if not src.exists():
        started = time.perf_counter()
        write_tree(src, args.files)
        print(f"wrote {args.files} files in {time.perf_counter() - started:.0f} s")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    for workers in sorted({1, default_workers()}):
        started = time.perf_counter()
        paths = [str(p) for p in find_files(src)]
        headers = list(parallel_map(read_header, paths, workers, progress=False))
        seconds = time.perf_counter() - started
        assert len(headers) == args.files and not any(h["error"] for h in headers)
        print(f"header scan, {workers} process(es): {args.files} files in {seconds:.1f} s "
              f"= {args.files / seconds:.0f} files/s")  # fmt: skip
    out = work / "cohort"
    shutil.rmtree(out, ignore_errors=True)  # a previous run's output is not part of the timing
    started = time.perf_counter()
    result = import_dicom(src, out, progress=False)
    seconds = time.perf_counter() - started
    print(f"whole import (copy): {result.n_images} images placed of {result.n_files} files in "
          f"{seconds:.1f} s = {result.n_files / seconds:.0f} files/s")  # fmt: skip
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
