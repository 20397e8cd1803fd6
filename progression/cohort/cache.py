"""Decoded radiographs stored once, read back as uint8 arrays with one memmap index.

Decoding a DICOM and resizing it takes 10-200 ms; a training run reads every image each
epoch. :class:`ImageCache` decodes each file once (in worker processes), stores the
``size x size`` uint8 result in fixed-size shard files (``shard_00000.u8``, each
``shard_slots x size x size`` bytes, memory-mapped) and keeps ``index.json``: absolute
path -> ``[slot, mtime_ns, file size, crc32 of the slot]``. A file whose size or mtime
changed is decoded again into its old slot.

Crash safety: slot data is written and flushed first, then the index is replaced
atomically (:mod:`progression.io`); a slot whose bytes no longer match its crc32 (a run
killed mid-write, a damaged disk) is detected on the next :meth:`ImageCache.ensure` and
decoded again, and an unreadable index is rebuilt. Any number of processes (DataLoader
workers, DDP ranks) may read at once; ``ensure`` holds an exclusive ``fcntl`` lock, so
writes come from one process at a time and a second rank finds the work done.

The cache lives in ``$PROGRESSION_CACHE_DIR`` or ``~/.cache/progression`` (one
sub-directory per image size), never inside a cohort directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from progression.cohort.parallel import auto_workers, parallel_map
from progression.cohort.workers import decode_u8
from progression.errors import ConfigError, ImageError
from progression.io import atomic_write_text

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1
# Shard files of about 64 MiB: few files, and each one maps in one piece.
SHARD_BYTES = 64 * 2**20
# Save the index after this many new decodes, so a killed run keeps most of its work.
_SAVE_EVERY = 1024


def default_cache_root() -> Path:
    """``$PROGRESSION_CACHE_DIR`` if set, else ``~/.cache/progression``."""
    env = os.environ.get("PROGRESSION_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "progression"


class ImageCache:
    """Memory-mapped uint8 store of decoded, resized images (pixel value = round(255 x)).

    ``ImageCache(cache_dir, image_size)`` uses ``<cache_dir>/<image_size>/`` (``cache_dir``
    None or "" = :func:`default_cache_root`). Call :meth:`ensure` once with every image
    path to get their slots, then :meth:`get` in the training loop.
    """

    def __init__(self, cache_dir: str | Path | None, image_size: int):
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1 pixel, got {image_size}")
        root = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
        self.dir = root.resolve() / str(image_size)
        self.image_size = image_size
        self.shard_slots = max(1, SHARD_BYTES // (image_size * image_size))
        self.decode_count = 0  # decodes requested by this instance (in-process or in workers)
        self._counts = {"hits": 0, "stale": 0, "corrupt": 0, "bad": 0}
        self._readers: dict[int, np.memmap] = {}
        self._verified: set[int] = set()  # slots whose crc this instance has checked
        _refuse_cohort_directory(self.dir)

    # ---------------------------------------------------------------- public API

    def ensure(
        self,
        paths: Sequence[str | os.PathLike],
        progress: bool = True,
        skip_bad: bool = False,
        workers: int | None = None,
    ) -> np.ndarray:
        """Slots (int64, aligned with ``paths``) of every image, decoding only what is missing.

        An entry is reused when the file's mtime and size match and its slot passes the
        crc32 check; otherwise the file is decoded again (in ``workers`` processes; None
        = one per core when enough work is missing to gain from it). Unreadable images raise
        :class:`~progression.errors.ImageError` listing them, or with ``skip_bad`` get
        slot -1 and one logged warning with their count.
        """
        wanted = [os.path.abspath(os.fspath(p)) for p in paths]
        unique = list(dict.fromkeys(wanted))
        bad: dict[str, str] = {}
        slot_of: dict[str, int] = {}
        with self._locked():
            entries = self._load_index()
            next_slot = 1 + max((e[0] for e in entries.values()), default=-1)
            todo: list[str] = []
            for path in unique:
                try:
                    stat = os.stat(path)
                except OSError as exc:
                    bad[path] = f"{path}: cannot be read ({exc.strerror}); fix the path"
                    continue
                entry = entries.get(path)
                if entry is None:
                    todo.append(path)
                elif entry[1] != stat.st_mtime_ns or entry[2] != stat.st_size:
                    self._counts["stale"] += 1
                    todo.append(path)
                elif not self._slot_intact(entry[0], entry[3]):
                    self._counts["corrupt"] += 1
                    logger.warning("image cache: slot of %s is damaged; decoding it again", path)
                    todo.append(path)
                else:
                    self._counts["hits"] += 1
                    slot_of[path] = entry[0]
            jobs = [(path, self.image_size) for path in todo]
            n_workers = auto_workers(todo) if workers is None else workers
            results = parallel_map(decode_u8, jobs, n_workers, progress, "decoding images")
            written = 0
            with contextlib.closing(_ShardWriter(self)) as writer:
                for path, (pixels, error, mtime_ns, size) in zip(todo, results):
                    self.decode_count += 1
                    if error is not None:
                        bad[path] = error
                        continue
                    if path in entries:
                        slot = entries[path][0]
                    else:
                        slot, next_slot = next_slot, next_slot + 1
                    entries[path] = [slot, mtime_ns, size, writer.write(slot, pixels)]
                    self._verified.add(slot)
                    slot_of[path] = slot
                    written += 1
                    if written % _SAVE_EVERY == 0:
                        self._commit(writer, entries)
                if written % _SAVE_EVERY:
                    self._commit(writer, entries)
        if bad:
            self._counts["bad"] += len(bad)
            listing = "\n".join(list(bad.values())[:20])
            more = f"\n... and {len(bad) - 20} more" if len(bad) > 20 else ""
            if not skip_bad:
                raise ImageError(
                    f"{len(bad)} image(s) cannot be read:\n{listing}{more}\n"
                    "fix or remove them (`progression validate` lists them all), or set "
                    "data.skip_bad_images=true to train without them"
                )
            logger.warning("skipping %d unreadable image(s):\n%s%s", len(bad), listing, more)
        return np.array([slot_of.get(p, -1) for p in wanted], dtype=np.int64)

    def get(self, slots: np.ndarray | Sequence[int]) -> np.ndarray:
        """uint8 ``[len(slots), size, size]`` images; slot -1 (a skipped image) reads as zeros."""
        slots = np.asarray(slots, dtype=np.int64)
        out = np.zeros((len(slots), self.image_size, self.image_size), dtype=np.uint8)
        shards = slots // self.shard_slots
        offsets = slots % self.shard_slots
        for shard in np.unique(shards[slots >= 0]):
            rows = (shards == shard) & (slots >= 0)
            out[rows] = self._reader(int(shard))[offsets[rows]]
        return out

    @property
    def stats(self) -> dict[str, int]:
        """Counts for this instance (hits, stale, corrupt, bad, decodes) and the store's size."""
        shard_files = list(self.dir.glob("shard_*.u8")) if self.dir.is_dir() else []
        return {
            **self._counts,
            "decodes": self.decode_count,
            "entries": len(self._load_index()),
            "bytes": sum(f.stat().st_blocks * 512 for f in shard_files),  # on disk (sparse)
        }

    # ---------------------------------------------------------------- storage

    def __getstate__(self) -> dict:
        # Memory maps are per process; a DataLoader worker reopens its own.
        state = self.__dict__.copy()
        state["_readers"] = {}
        return state

    def _shard_path(self, shard: int) -> Path:
        return self.dir / f"shard_{shard:05d}.u8"

    def _shape(self) -> tuple[int, int, int]:
        return (self.shard_slots, self.image_size, self.image_size)

    def _reader(self, shard: int) -> np.memmap:
        reader = self._readers.get(shard)
        if reader is None:
            reader = np.memmap(
                self._shard_path(shard), dtype=np.uint8, mode="r", shape=self._shape()
            )
            self._readers[shard] = reader
        return reader

    def _slot_intact(self, slot: int, crc: int) -> bool:
        if slot in self._verified:
            return True
        shard, offset = divmod(slot, self.shard_slots)
        if not self._shard_path(shard).is_file():
            return False
        ok = zlib.crc32(self._reader(shard)[offset].tobytes()) == crc
        if ok:
            self._verified.add(slot)
        return ok

    def _load_index(self) -> dict[str, list[int]]:
        path = self.dir / "index.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning(
                "image cache index %s is unreadable (%s); rebuilding the cache", path, exc
            )
            return {}
        if (
            not isinstance(data, dict)
            or data.get("format") != INDEX_FORMAT
            or data.get("image_size") != self.image_size
            or data.get("shard_slots") != self.shard_slots
            or not isinstance(data.get("entries"), dict)
        ):
            logger.warning("image cache index %s has another layout; rebuilding the cache", path)
            return {}
        return {
            p: e
            for p, e in data["entries"].items()
            if isinstance(e, list) and len(e) == 4 and all(isinstance(v, int) for v in e)
        }

    def _commit(self, writer: _ShardWriter, entries: dict[str, list[int]]) -> None:
        """Slot data on disk first, then the index that points at it (atomically)."""
        writer.sync()
        self._save_index(entries)

    def _save_index(self, entries: dict[str, list[int]]) -> None:
        data = {
            "format": INDEX_FORMAT,
            "image_size": self.image_size,
            "shard_slots": self.shard_slots,
            "entries": entries,
        }
        atomic_write_text(self.dir / "index.json", json.dumps(data, separators=(",", ":")))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class _ShardWriter:
    """Shard files opened for one :meth:`ImageCache.ensure`; ``sync`` makes writes durable."""

    def __init__(self, cache: ImageCache):
        self.cache = cache
        self.fds: dict[int, int] = {}

    def write(self, slot: int, pixels: bytes) -> int:
        """Write one image into its slot; returns the crc32 of its bytes."""
        cache = self.cache
        shard, offset = divmod(slot, cache.shard_slots)
        fd = self.fds.get(shard)
        if fd is None:
            fd = os.open(cache._shard_path(shard), os.O_RDWR | os.O_CREAT, 0o644)
            self.fds[shard] = fd
            total = cache.shard_slots * cache.image_size**2
            if os.fstat(fd).st_size < total:
                os.ftruncate(fd, total)  # sparse: unused slots take no disk space
        os.pwrite(fd, pixels, offset * cache.image_size**2)
        return zlib.crc32(pixels)

    def sync(self) -> None:
        for fd in self.fds.values():
            os.fsync(fd)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _refuse_cohort_directory(cache_dir: Path) -> None:
    """The cache may not sit in a cohort directory: user cohorts are never written to."""
    for parent in (cache_dir, *cache_dir.parents):
        if (parent / "images.csv").is_file() and (parent / "visits.csv").is_file():
            raise ConfigError(
                f"image cache directory {cache_dir} is inside the cohort directory {parent}; "
                "the cohort is never written to: set data.cache_dir (or "
                "$PROGRESSION_CACHE_DIR) to a directory outside it"
            )
