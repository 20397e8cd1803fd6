"""Throughput benchmark: training and prediction against the pure-compute ceiling (issue #6).

In one run on one machine it measures, for the tiny config (64 px) and the default config's
backbone (256 px, few steps):

(a) ceiling: forward + backward images/s of the bare timm backbone on random tensors already
    in memory, at the configured image size and the training batch's image count;
(b) training images/s through the real ``progression.train.fit`` (DataModule +
    LightningModule + Trainer), image stage, cache warm; (c) the ratio (b)/(a);
(d) the data pipeline alone (cached loading + collation of the same batches), images/s;
(e) ``predict_cohort`` patients/s and images/s against bare-backbone inference images/s;
(f) per-patient time of (b) and (e) when the cohort grows 1x, 4x, 16x, and per-visit time
    when visits per patient grow 2 -> 8;
(g) peak RSS of ``predict_cohort`` on 1,000 and 10,000 patients (32 px films), each in its
    own subprocess, to show prediction streams films instead of holding them.

Every figure is the median of repeats after warm-up (training: after a warm-up epoch). It
prints a table and writes ``experiments/results/throughput_<device>.json`` and ``.md``.

    nice python experiments/benchmark_throughput.py                 # CPU, about 10 min on 2 cores
    nice python experiments/benchmark_throughput.py --parts tiny    # the tiny config only
    python experiments/benchmark_throughput.py --device cuda --compile   # bf16 + channels_last

The cohorts are simulated once (``progression.simulate``, 64 px films, seeded) into
``--work`` and reused by later runs. Larger cohorts are the simulated one replicated with new
patient ids and the same image files (throughput does not depend on what the films show);
cohorts with a fixed number of visits per patient repeat each patient's visits every 6
months. Run it with ``nice`` on a shared machine; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REGIONS = ("hand_left", "hand_right", "foot_left", "foot_right")
VISIT_SPACING_DAYS = 183  # fixed-visit cohorts: one visit every 6 months
PARTS = ("tiny", "default", "scaling", "memory")
# Targets of issue #6.
TARGET_TRAIN_RATIO = 0.85
TARGET_PIPELINE_FACTOR = 5.0
TARGET_PREDICT_RATIO = 0.8
TARGET_FLAT = 0.15  # time per patient (per visit) may grow by at most 15 % from 1x to 16x
TARGET_RSS_GROWTH = 0.25  # peak RSS at 10x the patients may grow by at most 25 %
SCALE_FACTORS = (1, 4, 16)
VISIT_COUNTS = (2, 4, 8)
MIN_TIMED_FILMS = 3000  # scaling rows: repeats until about this many films are timed
PREDICT_ENCODE_BATCH = 256  # predict_cohort's default: 4 x batch_size (64) films per pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: bf16 autocast, channels_last, loader workers, pinned memory")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone (ceiling, inference baseline and training)")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated subset of {','.join(PARTS)} (default: all)")
    p.add_argument("--work", default="outputs/benchmark_throughput",
                   help="simulated cohorts, image cache, MLflow store and checkpoints")
    p.add_argument("--patients", type=int, default=24,
                   help="simulated base cohort (1x of the scaling rows)")
    p.add_argument("--tiny-patients", type=int, default=96,
                   help="patients for the tiny config's row (the base cohort replicated)")
    p.add_argument("--default-patients", type=int, default=6,
                   help="patients for the default config's 256 px row (few steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3,
                   help="timed repeats (training: timed image epochs) per measurement")
    p.add_argument("--default-repeats", type=int, default=2,
                   help="timed repeats for the default config's row (seconds per step)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared 2-core machine more threads "
                        "oversubscribe the cores; 0 = torch's default)")
    p.add_argument("--rss-patients", default="1000,10000",
                   help="cohort sizes for the peak-RSS measurement of predict")
    p.add_argument("--out", default=str(RESULTS), help="directory for throughput_<device>.json/.md")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--rss-child", nargs=4, metavar=("CHECKPOINT", "COHORT", "N", "JSON"),
                   help=argparse.SUPPRESS)  # internal: one predict run in a fresh process
    args = p.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        p.error(f"--parts: unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    return args


# ---------------------------------------------------------------------------------- cohorts
def simulate_base(work: Path, n_patients: int, seed: int, progress: bool) -> Path:
    """A simulated cohort of ``n_patients`` (64 px films), reused when already there."""
    from progression.simulate import SimulationConfig, simulate_cohort

    out = work / f"sim_{n_patients}p_seed{seed}"
    cfg = SimulationConfig(n_patients=n_patients, seed=seed, image_size=64)
    return simulate_cohort(out, cfg, progress=progress, overwrite=True, reuse=True)


def _read_tables(base: Path) -> dict[str, Any]:
    import pandas as pd

    tables = {}
    for name in ("patients", "visits", "images", "joint_scores"):
        path = base / f"{name}.csv"
        if path.is_file():  # text as written, so a copy reads back identically
            tables[name] = pd.read_csv(path, dtype=str, keep_default_na=False)
    return tables


def derive_cohort(base: Path, out: Path, mapping) -> Path:
    """A cohort at ``out`` whose visits are copies of ``base`` visits.

    ``mapping`` rows are ``patient_id, visit_date`` (new) and ``src_patient, src_date`` (the
    copied visit): its covariates, scores, films and joint scores. ``out/images`` links to the
    base cohort's images, so films are shared, never copied. Reused when already written.
    """
    from progression.io import atomic_write_csv, atomic_write_text

    if (out / "images.csv").is_file():
        return out
    tables = _read_tables(base)
    src_key = {"patient_id": "src_patient", "visit_date": "src_date"}
    patient_map = mapping[["patient_id", "src_patient"]].drop_duplicates("patient_id")
    derived = {"patients": patient_map.merge(
        tables["patients"].rename(columns={"patient_id": "src_patient"}), on="src_patient")}
    for name in ("visits", "images", "joint_scores"):
        if name in tables:
            derived[name] = mapping.merge(tables[name].rename(columns=src_key),
                                          on=["src_patient", "src_date"])
    out.mkdir(parents=True, exist_ok=True)
    link = out / "images"
    if not link.exists():
        link.symlink_to((base / "images").resolve(), target_is_directory=True)
    # the films are the base cohort's, outside this one: say so (docs/cohort_format.md)
    atomic_write_text(out / "cohort.yaml", "allow_external_images: true\n")
    # images.csv last: its presence marks a complete cohort.
    for name in ("patients", "visits", "joint_scores", "images"):
        if name in derived:
            frame = derived[name][list(tables[name].columns)]
            atomic_write_csv(out / f"{name}.csv", frame)
    return out


def replicate_mapping(base: Path, n_patients: int):
    """Visits of ``base`` repeated with new patient ids (``P0001-c2``) up to ``n_patients``."""
    import pandas as pd

    visits = _read_tables(base)["visits"][["patient_id", "visit_date"]]
    ids = list(dict.fromkeys(visits["patient_id"]))
    copies = -(-n_patients // len(ids))
    frames = []
    for c in range(copies):
        f = visits.rename(columns={"patient_id": "src_patient", "visit_date": "src_date"})
        f = f.assign(patient_id=f["src_patient"] + (f"-c{c}" if c else ""),
                     visit_date=f["src_date"])
        frames.append(f)
    mapping = pd.concat(frames, ignore_index=True)
    keep = list(dict.fromkeys(mapping["patient_id"]))[:n_patients]
    return mapping[mapping["patient_id"].isin(keep)]


def fixed_visits_mapping(base: Path, n_visits: int):
    """Every base patient with exactly ``n_visits`` visits 6 months apart, cycling through
    the patient's own visits (scores, covariates, films)."""
    import pandas as pd

    visits = _read_tables(base)["visits"][["patient_id", "visit_date"]]
    rows = []
    for pid, group in visits.groupby("patient_id", sort=False):
        dates = sorted(group["visit_date"])
        first = pd.Timestamp(dates[0])
        for j in range(n_visits):
            day = first + pd.Timedelta(days=VISIT_SPACING_DAYS * j)
            rows.append((pid, day.strftime("%Y-%m-%d"), pid, dates[j % len(dates)]))
    return pd.DataFrame(rows, columns=["patient_id", "visit_date", "src_patient", "src_date"])


# ---------------------------------------------------------------------------------- timing
def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _now(device: str) -> tuple[float, float]:
    """(wall-clock, this process's CPU) seconds, after the GPU's queued work is done.

    On a shared CPU the wall clock also measures the neighbours' load (a process may get a
    fifth of a core); CPU time counts only this process's work, so CPU-device ratios use it.
    """
    _sync(device)
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float], device: str) -> tuple[float, float]:
    wall, cpu = _now(device)
    return wall - start[0], cpu - start[1]


class BareBackbone:
    """The configured backbone alone on random films already in memory: the compute ceiling.

    Timed right after the work it is compared with (same process, threads and machine
    load), over exactly the same number of films in the same pass sizes.
    """

    def __init__(self, cfg, args) -> None:
        import torch

        from progression.models.backbones import create_backbone

        self.device = args.device
        self.bf16 = args.device == "cuda"
        self.model = create_backbone(cfg.model.backbone, cfg.model.backbone_kwargs).to(self.device)
        x = torch.randn(PREDICT_ENCODE_BATCH, 1, cfg.data.image_size, cfg.data.image_size,
                        device=self.device)
        if self.device == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if args.compile:
            self.model.compile()
        self.x = x

    def _input(self, n: int):
        if n <= len(self.x):
            return self.x[:n]
        return self.x.repeat(-(-n // len(self.x)), 1, 1, 1)[:n]

    def train_seconds(self, passes: list[int]) -> tuple[float, float]:
        """(wall, CPU) seconds of forward + backward over passes of ``passes[i]`` films each
        (training's own pass sizes)."""
        import torch

        self.model.train()
        start = _now(self.device)
        for n in passes:
            self.model.zero_grad(set_to_none=True)
            with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model(self._input(n))
            out.float().sum().backward()
        return _since(start, self.device)

    def inference_seconds(self, n_images: int,
                          batch: int = PREDICT_ENCODE_BATCH) -> tuple[float, float]:
        """(wall, CPU) seconds of forward passes over ``n_images`` films, ``batch`` at a time
        (prediction's pass size)."""
        import torch

        self.model.eval()
        passes = [min(batch, n_images - i) for i in range(0, n_images, batch)]
        start = _now(self.device)
        with torch.inference_mode(), torch.autocast(self.device, dtype=torch.bfloat16,
                                                    enabled=self.bf16):
            for n in passes:
                self.model(self._input(n))
        return _since(start, self.device)


def make_clock(device: str, ceiling: BareBackbone | None):
    """A Lightning callback timing every training batch from the previous mark (the epoch's
    start for the first batch), so data loading is included and epoch-end work is not. After
    each image-stage epoch it times ``ceiling`` on the epoch's pass sizes."""
    import pytorch_lightning as pl

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.batches: list[dict[str, Any]] = []
            self.ceiling_seconds: dict[int, tuple[float, float]] = {}

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._mark = _now(device)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            now = _now(device)
            image_stage = "images" in batch
            self.batches.append({
                "epoch": trainer.current_epoch,
                "stage": "image" if image_stage else "sequence",
                "images": int(batch["images"].shape[0]) if image_stage else 0,
                "items": int(batch["visit_target"].shape[0] if image_stage
                             else batch["visit_mask"].shape[0]),
                "seconds": now[0] - self._mark[0],
                "cpu_seconds": now[1] - self._mark[1],
            })
            self._mark = now

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            epoch = trainer.current_epoch
            passes = [b["images"] for b in self.batches
                      if b["epoch"] == epoch and b["stage"] == "image"]
            if ceiling is not None and passes:
                self.ceiling_seconds[epoch] = ceiling.train_seconds(passes)

        def epochs(self, stage: str) -> list[dict[str, float]]:
            """Per epoch of ``stage``: images, items (visits or patients), seconds, batches
            and (image stage, with a ceiling) the ceiling's seconds for the same films."""
            out: dict[int, dict[str, float]] = {}
            for b in self.batches:
                if b["stage"] == stage:
                    e = out.setdefault(b["epoch"], {"images": 0, "items": 0, "seconds": 0.0,
                                                    "cpu_seconds": 0.0, "batches": 0})
                    for key in ("images", "items", "seconds", "cpu_seconds"):
                        e[key] += b[key]
                    e["batches"] += 1
            for epoch, e in out.items():
                if epoch in self.ceiling_seconds:
                    e["ceiling_seconds"], e["ceiling_cpu_seconds"] = self.ceiling_seconds[epoch]
            return [out[k] for k in sorted(out)]

    return Clock()


def make_compiler():
    """A callback compiling the encoder's backbone in place (state_dict keys unchanged)."""
    import pytorch_lightning as pl

    class CompileBackbone(pl.Callback):
        def on_fit_start(self, trainer, pl_module) -> None:
            if pl_module.model.encoder is not None:
                pl_module.model.encoder.backbone.compile()

    return CompileBackbone()


def timed(fn, repeats: int, warmup: int = 1, device: str = "cpu") -> list[float]:
    """Seconds of ``fn()`` for each of ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------- measurements
def make_config(name: str, cohort: Path, args, image_size: int | None = None,
                image_epochs: int | None = None):
    """The bundled config ``name`` pointed at ``cohort``, with the benchmark's stores."""
    from progression.config import load_config

    work = Path(args.work).resolve()
    image_epochs = 1 + args.repeats if image_epochs is None else image_epochs
    overrides = [
        # No validation split: its epoch-end work is not timed, and without it fit() skips
        # the interval calibration, which needs scored follow-up the derived cohorts lack.
        f"data.path={cohort}", f"data.cache_dir={work / 'cache'}", "data.val_fraction=0",
        f"train.image_epochs={image_epochs}", f"train.max_epochs={image_epochs + 1}",
        f"train.threads={args.threads}", "train.progress=false",
        f"train.output_dir={work / 'runs'}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}", "tracking.log_model=false",
        "tracking.experiment=benchmark_throughput",
    ]
    if image_size is not None:
        overrides.append(f"data.image_size={image_size}")
    if args.device == "cuda":
        overrides += ["train.accelerator=gpu", "train.precision=bf16-mixed",
                      "train.deterministic=false", f"data.num_workers={min(6, os.cpu_count() or 1)}"]
    return load_config(name, overrides)


def film_paths(cohort) -> list[str]:
    images = cohort.images
    return images.loc[images["region"].isin(REGIONS), "abs_path"].tolist()


def warm_cache(cfg, cohort: Path, progress: bool) -> int:
    """Decode every film of ``cohort`` into the cache (untimed); returns the film count."""
    from progression.cohort import ImageCache, read_cohort

    paths = film_paths(read_cohort(cohort))
    ImageCache(cfg.data.cache_dir, cfg.data.image_size).ensure(paths, progress=progress)
    return len(paths)


def _clock(args) -> str:
    """The clock ratios and scaling use: CPU seconds on a CPU (see :func:`_now`), wall on GPU."""
    return "cpu" if args.device == "cpu" else "wall"


def measure_training(cfg, args, with_ceiling: bool = False) -> dict[str, Any]:
    """(b) ``fit`` with a clock: image-stage images/s (median over the epochs after the first)
    and sequence-stage patients/s; with ``with_ceiling`` (a) and (c), the bare backbone timed
    after each epoch on the same films. Returns the checkpoint too."""
    from progression.train import fit

    ceiling = BareBackbone(cfg, args) if with_ceiling else None
    clock = make_clock(args.device, ceiling)
    callbacks = [clock, make_compiler()] if args.compile else [clock]
    start = time.perf_counter()
    result = fit(cfg, callbacks=callbacks, progress=False)
    total = time.perf_counter() - start
    image = clock.epochs("image")
    timed_epochs = image[1:] or image  # the first epoch warms up (and its ceiling too)
    seq = clock.epochs("sequence")

    def median(fn) -> float:
        return statistics.median(fn(e) for e in timed_epochs)

    out = {
        "train_images_per_s": median(lambda e: e["images"] / e["seconds"]),
        "train_images_per_cpu_s": median(lambda e: e["images"] / e["cpu_seconds"]),
        "images_per_epoch": int(timed_epochs[0]["images"]),
        "visits_per_epoch": int(timed_epochs[0]["items"]),
        "batch_images": max(b["images"] for b in clock.batches if b["stage"] == "image"),
        "image_epoch_seconds": median(lambda e: e["seconds"]),
        "image_epoch_cpu_seconds": median(lambda e: e["cpu_seconds"]),
        "sequence_patients_per_s": seq[-1]["items"] / seq[-1]["seconds"] if seq else None,
        "fit_seconds": total,
        "checkpoint": str(result.checkpoint_path),
    }
    if ceiling is not None:
        out.update({
            "ceiling_images_per_s": median(lambda e: e["images"] / e["ceiling_seconds"]),
            "ceiling_images_per_cpu_s": median(lambda e: e["images"] / e["ceiling_cpu_seconds"]),
            "train_ratio_wall": median(lambda e: e["ceiling_seconds"] / e["seconds"]),
            "train_ratio_cpu": median(lambda e: e["ceiling_cpu_seconds"] / e["cpu_seconds"]),
            "train_ratio_cpu_epochs": [e["ceiling_cpu_seconds"] / e["cpu_seconds"]
                                       for e in timed_epochs],
        })
        out["train_ratio"] = out[f"train_ratio_{_clock(args)}"]
    return out


def measure_pipeline(cfg, args) -> dict[str, float]:
    """(d) the image-stage training loader alone: cached films -> collated batches, images/s;
    and the sequence-stage loader, patients/s."""
    from progression.cohort import read_cohort
    from progression.data.datamodule import ProgressionDataModule

    dm = ProgressionDataModule(cfg, read_cohort(cfg.data.path), progress=False)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()  # no trainer: epoch 0, the image stage
    counts = {"images": 0}

    def image_epoch() -> None:
        counts["images"] = sum(int(b["images"].shape[0]) for b in loader)

    image_times = timed(image_epoch, args.repeats)
    seq_loader = dm._loader("sequence", "train")
    n_patients = len(seq_loader.dataset)
    seq_times = timed(lambda: sum(1 for _ in seq_loader), args.repeats)
    return {
        "pipeline_images_per_s": counts["images"] / statistics.median(image_times),
        "pipeline_sequence_patients_per_s": n_patients / statistics.median(seq_times),
    }


def measure_predict(checkpoint: str, cohort_dir: Path, args, ceiling: BareBackbone | None = None,
                    from_directory: bool = True) -> dict[str, Any]:
    """(e) ``predict_cohort`` on the cohort already read (the model's path: tables -> arrays,
    cache, encoding, forecasts) and, with ``from_directory``, on the directory (adds reading
    and validating the tables). With ``ceiling``, bare-backbone inference over the same
    films is timed after each predict call. Medians of ``args.repeats`` after a warm-up."""
    from progression.cohort import read_cohort
    from progression.predict import predict_cohort

    start = time.perf_counter()
    cohort = read_cohort(cohort_dir)
    read_seconds = time.perf_counter() - start
    n_images = len(film_paths(cohort))
    n_patients = len(cohort.patients)

    def run(data) -> tuple[float, float]:
        begin = _now(args.device)
        predict_cohort(checkpoint, data, progress=False)
        return _since(begin, args.device)

    run(cohort)  # warm-up
    if ceiling is not None:
        ceiling.inference_seconds(n_images)
    spans, bare, dir_spans = [], [], []
    for _ in range(args.repeats):
        spans.append(run(cohort))
        if ceiling is not None:
            bare.append(ceiling.inference_seconds(n_images))
        if from_directory:
            dir_spans.append(run(cohort_dir))
    wall = statistics.median(w for w, _ in spans)
    out = {"predict_seconds": wall, "predict_cpu_seconds": statistics.median(c for _, c in spans),
           "predict_patients": n_patients, "predict_images": n_images,
           "predict_patients_per_s": n_patients / wall,
           "predict_images_per_s": n_images / wall, "read_cohort_seconds": read_seconds}
    if from_directory:
        dir_wall = statistics.median(w for w, _ in dir_spans)
        out.update({"predict_dir_seconds": dir_wall,
                    "predict_dir_patients_per_s": n_patients / dir_wall,
                    "predict_dir_images_per_s": n_images / dir_wall})
    if ceiling is not None:
        out["inference_images_per_s"] = n_images / statistics.median(w for w, _ in bare)
        for key, k in (("wall", 0), ("cpu", 1)):
            out[f"predict_ratio_{key}"] = statistics.median(
                b[k] / r[k] for b, r in zip(bare, spans))
            if from_directory:
                out[f"predict_dir_ratio_{key}"] = statistics.median(
                    b[k] / r[k] for b, r in zip(bare, dir_spans))
        out["predict_ratio"] = out[f"predict_ratio_{_clock(args)}"]
        if from_directory:
            out["predict_dir_ratio"] = out[f"predict_dir_ratio_{_clock(args)}"]
    return out


def measure_config(name: str, cohort: Path, args, repeats: int,
                   predict_repeats: int | None = None) -> dict[str, Any]:
    """(a)-(e) for one config on one cohort: ``repeats`` timed training epochs and pipeline
    passes, ``predict_repeats`` (default ``repeats``) timed predict calls."""
    args = argparse.Namespace(**{**vars(args), "repeats": repeats})
    cfg = make_config(name, cohort, args)
    n_films = warm_cache(cfg, cohort, not args.no_progress)
    row: dict[str, Any] = {
        "config": name, "backbone": cfg.model.backbone,
        "backbone_kwargs": dict(cfg.model.backbone_kwargs), "image_size": cfg.data.image_size,
        "visit_batch_size": cfg.data.visit_batch_size, "cohort_patients": _n_patients(cohort),
        "cohort_images": n_films, "repeats": repeats,
        "predict_repeats": predict_repeats or repeats,
    }
    row.update(measure_training(cfg, args, with_ceiling=True))
    row.update(measure_pipeline(cfg, args))
    row["pipeline_factor"] = row["pipeline_images_per_s"] / row["train_images_per_s"]
    predict_args = argparse.Namespace(**{**vars(args), "repeats": row["predict_repeats"]})
    row.update(measure_predict(row["checkpoint"], cohort, predict_args, BareBackbone(cfg, args)))
    return row


def _n_patients(cohort: Path) -> int:
    with open(cohort / "patients.csv", encoding="utf-8") as handle:
        return sum(1 for _ in handle) - 1


def replicated(base: Path, n_patients: int, work: Path) -> Path:
    """``base`` itself, or a replicated copy with ``n_patients`` patients (same films)."""
    n = _n_patients(base)
    if n_patients == n:
        return base
    return derive_cohort(base, work / f"replicate_{n}_{n_patients}p",
                         replicate_mapping(base, n_patients))


def measure_scaling(base: Path, args, measured: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    """(f) seconds of a training epoch and of predict at 1x/4x/16x patients, and at 2/4/8
    visits per patient (tiny config). ``measured``: tiny-config results already taken, by
    cohort directory (reused, not measured twice)."""
    work = Path(args.work).resolve()
    n = _n_patients(base)
    cohorts = [("cohort", f"{k}x", k, replicated(base, n * k, work)) for k in SCALE_FACTORS]
    cohorts += [("visits", f"{v} visits", v, derive_cohort(
        base, work / f"visits_{n}_{v}", fixed_visits_mapping(base, v))) for v in VISIT_COUNTS]
    rows = []
    for kind, label, factor, cohort in cohorts:
        cfg = make_config("tiny", cohort, args)
        if cohort not in measured:
            n_films = warm_cache(cfg, cohort, not args.no_progress)
            # Enough repeats to time ~MIN_TIMED_FILMS films: a 0.1 s epoch is mostly noise.
            repeats = max(2, math.ceil(MIN_TIMED_FILMS / n_films))
            sized = argparse.Namespace(**{**vars(args), "repeats": repeats})
            train = measure_training(make_config("tiny", cohort, sized), sized)
            measured[cohort] = {**train, **measure_predict(train["checkpoint"], cohort, sized,
                                                           from_directory=False)}
        m = measured[cohort]
        patients = _n_patients(cohort)
        n_train = _train_patients(cfg)
        rows.append({
            "kind": kind, "label": label, "factor": factor, "patients": patients,
            "train_patients": n_train, "train_visits": m["visits_per_epoch"],
            "visits": patients * factor if kind == "visits" else None,
            "images_per_epoch": m["images_per_epoch"],
            "train_epoch_seconds": m["image_epoch_seconds"],
            "train_epoch_cpu_seconds": m["image_epoch_cpu_seconds"],
            "predict_seconds": m["predict_seconds"],
            "predict_cpu_seconds": m["predict_cpu_seconds"],
            "train_s_per_patient": m["image_epoch_seconds"] / n_train,
            "predict_s_per_patient": m["predict_seconds"] / patients,
            "read_cohort_s_per_patient": m["read_cohort_seconds"] / patients,
            "train_images_per_s": m["train_images_per_s"],
            "predict_images_per_s": m["predict_images_per_s"],
        })
    return {"rows": rows, "clock": _clock(args), "growth": _growth(rows, _clock(args))}


def _train_patients(cfg) -> int:
    from progression.cohort import read_cohort
    from progression.data.split import split_patients

    d = cfg.data
    ids = read_cohort(d.path).patient_ids
    return len(split_patients(ids, d.val_fraction, d.test_fraction, d.split_seed)["train"])


def _growth(rows: list[dict[str, Any]], clock: str) -> dict[str, dict[str, Any]]:
    """Seconds (``clock``: wall or CPU) per patient as the cohort grows and per visit as
    visits per patient grow; ``growth`` = per-unit time at the largest size over the smallest
    minus 1 (> 0.15: worse than linear). Per-call fixed costs (reading the checkpoint,
    pandas' per-operation overhead, a part-filled batch) make it fall, not grow."""
    suffix = "_cpu_seconds" if clock == "cpu" else "_seconds"
    cohort = [r for r in rows if r["kind"] == "cohort"]
    visits = [r for r in rows if r["kind"] == "visits"]
    out = {}
    for key, group, size, seconds in (
            ("training s/patient, 1x -> 16x patients", cohort, "train_patients", "train_epoch"),
            ("predict s/patient, 1x -> 16x patients", cohort, "patients", "predict"),
            ("training s/visit, 2 -> 8 visits per patient", visits, "train_visits", "train_epoch"),
            ("predict s/visit, 2 -> 8 visits per patient", visits, "visits", "predict")):
        per_unit = [r[seconds + suffix] / r[size] for r in sorted(group, key=lambda r: r[size])]
        out[key] = {"per_unit": per_unit, "growth": per_unit[-1] / per_unit[0] - 1.0}
    return out


def replicate_in_memory(cohort, n_patients: int):
    """``cohort`` (a read :class:`Cohort`) repeated with new patient ids up to ``n_patients``;
    the same film files, no joint scores (visit totals remain as inputs)."""
    import dataclasses

    import pandas as pd

    copies = -(-n_patients // len(cohort.patients))

    def repeat(frame):
        parts = [frame.assign(patient_id=frame["patient_id"] + (f"-c{c}" if c else ""))
                 for c in range(copies)]
        return pd.concat(parts, ignore_index=True)

    patients = repeat(cohort.patients).iloc[:n_patients]
    keep = set(patients["patient_id"])

    def cut(frame):
        frame = frame[frame["patient_id"].isin(keep)]
        order = ["patient_id", "visit_date"] if "visit_date" in frame else ["patient_id"]
        return frame.sort_values(order, kind="stable").reset_index(drop=True)

    return dataclasses.replace(
        cohort, patients=cut(patients), visits=cut(repeat(cohort.visits)),
        images=cut(repeat(cohort.images)), joint_scores=None,
        fingerprint=f"{cohort.fingerprint}x{n_patients}")


def measure_memory(base: Path, args) -> list[dict[str, Any]]:
    """(g) peak RSS of ``predict_cohort`` at each ``--rss-patients`` size, 32 px films, each
    in a fresh subprocess (cache warmed beforehand, so no decoding workers run)."""
    work = Path(args.work).resolve()
    cfg = make_config("tiny", base, args, image_size=32, image_epochs=1)
    warm_cache(cfg, base, not args.no_progress)
    checkpoint = measure_training(cfg, args)["checkpoint"]
    rows = []
    for n in (int(x) for x in args.rss_patients.split(",")):
        result = work / f"rss_{n}.json"
        command = [sys.executable, __file__, "--rss-child", checkpoint, str(base), str(n),
                   str(result), "--threads", str(args.threads), "--device", args.device]
        subprocess.run(command, check=True)
        rows.append({"patients": n, **json.loads(result.read_text())})
    return rows


def _status_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` (peak) of this process from /proc/self/status, in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}; the memory part needs Linux")


def rss_child(args) -> None:
    """One ``predict_cohort`` run on the base cohort replicated to N patients in memory;
    writes the resident memory (MiB) before predicting and its peak during the call, and
    the seconds it took. The peak is reset first (``clear_refs``), so imports and building
    the cohort do not count: getrusage's ru_maxrss would not do, it survives fork + exec."""
    import torch

    from progression.cohort import read_cohort
    from progression.io import atomic_write_text
    from progression.predict import predict_cohort

    checkpoint, base, n, out = args.rss_child
    if args.threads:
        torch.set_num_threads(args.threads)
    cohort = replicate_in_memory(read_cohort(base), int(n))
    before = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    start = time.perf_counter()
    frame = predict_cohort(checkpoint, cohort, progress=False)
    seconds = time.perf_counter() - start
    atomic_write_text(out, json.dumps({
        "images": len(film_paths(cohort)), "rss_before_predict_mb": before,
        "peak_rss_mb": _status_mib("VmHWM"), "seconds": seconds,
        "prediction_rows": len(frame)}))


# ---------------------------------------------------------------------------------- report
def machine(args) -> dict[str, Any]:
    import torch

    info = {
        "platform": platform.platform(), "processor": platform.machine(),
        "cpu_cores": os.cpu_count(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "device": args.device, "compile": args.compile,
        "load_average_start": os.getloadavg(),
    }
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue #6 with the achieved value and whether it is met."""
    out = []

    def add(target: str, value: float, met: bool) -> None:
        out.append({"target": target, "value": value, "met": bool(met)})

    clock = "CPU" if results["machine"]["device"] == "cpu" else "wall"
    for row in results.get("configs", []):
        name = f"{row['config']} ({clock} time)"
        add(f"{name}: training / ceiling >= {TARGET_TRAIN_RATIO}", row["train_ratio"],
            row["train_ratio"] >= TARGET_TRAIN_RATIO)
        add(f"{name}: data pipeline >= {TARGET_PIPELINE_FACTOR:g}x training",
            row["pipeline_factor"], row["pipeline_factor"] >= TARGET_PIPELINE_FACTOR)
        add(f"{name}: predict (cohort in memory) / bare inference >= {TARGET_PREDICT_RATIO}",
            row["predict_ratio"], row["predict_ratio"] >= TARGET_PREDICT_RATIO)
        add(f"{name}: predict (from the directory) / bare inference >= {TARGET_PREDICT_RATIO}",
            row["predict_dir_ratio"], row["predict_dir_ratio"] >= TARGET_PREDICT_RATIO)
    if "scaling" in results:
        for key, value in results["scaling"]["growth"].items():
            add(f"{clock} {key}: growth <= {TARGET_FLAT:.0%}", value["growth"],
                value["growth"] <= TARGET_FLAT)
    memory = results.get("memory") or []
    if len(memory) >= 2:
        growth = memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"] - 1.0
        add(f"predict peak RSS growth {memory[0]['patients']:,} -> {memory[-1]['patients']:,} "
            f"patients <= {TARGET_RSS_GROWTH:.0%}", growth, growth <= TARGET_RSS_GROWTH)
    return out


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"# Throughput ({m['device']})", "",
        f"Command: `{results['command']}`  ",
        f"Machine: {m['platform']}, {m['cpu_cores']} CPU cores"
        + (f", {m['gpu']}" if "gpu" in m else ", no GPU")
        + f"; torch {m['torch']}, {m['threads']} thread(s)"
        + (", torch.compile" if m["compile"] else "") + "  ",
        "Load average (1/5/15 min) at start: "
        + " / ".join(f"{x:.1f}" for x in m["load_average_start"]) + "; at end: "
        + " / ".join(f"{x:.1f}" for x in results["load_average_end"])
        + f"; total {results['seconds'] / 60:.1f} min.", "",
    ]
    if results.get("configs"):
        lines += [
            "| config | backbone | px | patients | films/batch | (a) ceiling img/s "
            "| (b) training img/s | (c) b/a CPU (wall) | (d) pipeline img/s | d/b "
            "| bare inference img/s | (e) predict img/s (in memory / from dir) "
            "| predict patients/s (in memory / from dir) "
            "| predict / inference CPU (wall), in memory / from dir |",
            "|---" * 14 + "|",
        ]
        for r in results["configs"]:
            kwargs = ",".join(f"{k}={v}" for k, v in r["backbone_kwargs"].items())
            lines.append(
                f"| {r['config']} | {r['backbone']}{'(' + kwargs + ')' if kwargs else ''} "
                f"| {r['image_size']} | {r['cohort_patients']} | {r['batch_images']} "
                f"| {_f(r['ceiling_images_per_s'])} | {_f(r['train_images_per_s'])} "
                f"| {r['train_ratio_cpu']:.2f} ({r['train_ratio_wall']:.2f}) "
                f"| {_f(r['pipeline_images_per_s'], 0)} "
                f"| {r['pipeline_factor']:.0f}x | {_f(r['inference_images_per_s'])} "
                f"| {_f(r['predict_images_per_s'])} / {_f(r['predict_dir_images_per_s'])} "
                f"| {_f(r['predict_patients_per_s'], 2)} / {_f(r['predict_dir_patients_per_s'], 2)} "
                f"| {r['predict_ratio_cpu']:.2f} ({r['predict_ratio_wall']:.2f}) / "
                f"{r['predict_dir_ratio_cpu']:.2f} ({r['predict_dir_ratio_wall']:.2f}) |")
        lines += ["", "Images/s are wall-clock; the ratios (c) and predict / inference compare "
                  "CPU seconds of this process (wall-clock ratios in brackets), each timed right "
                  "after the other on the same films.", ""] + [
            f"- {r['config']}: {r['cohort_images']} films; {r['images_per_epoch']} films per "
            f"training epoch (median of {r['repeats']} epochs after a warm-up epoch); sequence "
            f"stage {_f(r['sequence_patients_per_s'])} patients/s; sequence loader alone "
            f"{_f(r['pipeline_sequence_patients_per_s'], 0)} patients/s; reading and validating "
            f"the cohort directory {r['read_cohort_seconds']:.2f} s."
            for r in results["configs"]] + [""]
    if "scaling" in results:
        lines += ["(f) Scaling, tiny config: seconds of one training epoch (image stage) and of "
                  "one predict call (cohort in memory); reading the directory listed apart.", "",
                  "| cohort | patients | training patients / visits | films/epoch "
                  "| epoch s wall (CPU) | epoch s/patient | predict s wall (CPU) "
                  "| predict s/patient | read_cohort s/patient |", "|---" * 9 + "|"]
        for r in results["scaling"]["rows"]:
            lines.append(
                f"| {r['label']} | {r['patients']} | {r['train_patients']} / {r['train_visits']} "
                f"| {r['images_per_epoch']} | {r['train_epoch_seconds']:.2f} "
                f"({r['train_epoch_cpu_seconds']:.2f}) | {r['train_s_per_patient']:.4f} "
                f"| {r['predict_seconds']:.2f} ({r['predict_cpu_seconds']:.2f}) "
                f"| {r['predict_s_per_patient']:.4f} | {r['read_cohort_s_per_patient']:.4f} |")
        lines += ["", f"Per-unit time ({results['scaling']['clock']} seconds), smallest -> "
                  "largest size:", ""]
        for key, value in results["scaling"]["growth"].items():
            lines.append(f"- {key}: " + " -> ".join(f"{x:.4f}" for x in value["per_unit"])
                         + f" ({value['growth']:+.0%})")
        lines.append("")
    if results.get("memory"):
        lines += ["(g) Peak RSS of `predict_cohort`, 32 px films, the base cohort replicated in "
                  "memory (fresh process each):", "",
                  "| patients | films | seconds | RSS before predict (MiB) "
                  "| peak RSS during predict (MiB) | added by predict (MiB) |",
                  "|---|---|---|---|---|---|"]
        for r in results["memory"]:
            lines.append(f"| {r['patients']:,} | {r['images']:,} | {r['seconds']:.1f} "
                         f"| {r['rss_before_predict_mb']:.0f} | {r['peak_rss_mb']:.0f} "
                         f"| {r['peak_rss_mb'] - r['rss_before_predict_mb']:.0f} |")
        lines.append("")
    lines += ["Targets (issue #6):", "", "| target | achieved | met |", "|---|---|---|"]
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {t['value']:.2f} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # predict_cohort picks CUDA when it sees one
    import logging

    import torch
    from tqdm.auto import tqdm

    if args.rss_child:
        rss_child(args)
        return 0
    from progression.io import atomic_write_text

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    parts = args.parts.split(",")
    start = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(args),
                               "command": " ".join(["python", os.path.relpath(__file__),
                                                    *sys.argv[1:]])}
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = simulate_base(work, args.patients, args.seed, not args.no_progress)
    measured: dict[Path, dict[str, Any]] = {}  # tiny-config results by cohort, for reuse
    out = Path(args.out)

    def save() -> str:
        """Write what is measured so far (a later part failing keeps the earlier ones)."""
        results["targets"] = targets(results)
        results["load_average_end"] = os.getloadavg()
        results["seconds"] = time.perf_counter() - start
        atomic_write_text(out / f"throughput_{args.device}.json",
                          json.dumps(results, indent=2) + "\n")
        text = markdown(results)
        atomic_write_text(out / f"throughput_{args.device}.md", text)
        return text

    bar = tqdm([p for p in PARTS if p in parts], desc="benchmark", unit="part",
               disable=args.no_progress)
    for part in bar:
        bar.set_postfix_str(part)
        part_start = time.perf_counter()
        if part == "tiny":
            cohort = replicated(base, args.tiny_patients, work)
            row = measure_config("tiny", cohort, args, args.repeats)
            measured[cohort] = row
            results.setdefault("configs", []).append(row)
        elif part == "default":
            cohort = replicated(base, args.default_patients, work)
            # 256 px: a film costs ~0.1 s to encode on a busy 2-core CPU; one timed predict.
            results.setdefault("configs", []).append(
                measure_config("default", cohort, args, args.default_repeats, predict_repeats=1))
        elif part == "scaling":
            results["scaling"] = measure_scaling(base, args, measured)
        else:
            results["memory"] = measure_memory(base, args)
        results.setdefault("part_seconds", {})[part] = time.perf_counter() - part_start
        save()
    print(save())
    return 0


if __name__ == "__main__":
    sys.exit(main())
