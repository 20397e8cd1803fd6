"""Bad input at every entry point: a clear message naming the file/row/key and the fix, a
non-zero exit, no traceback, and the user's files left byte-identical.

The table and image checks themselves are covered by test_validate.py / test_cohort_fuzz.py /
test_image_cache.py; here the same defects go through the other commands (`train`, `tune`,
`evaluate`, `enrich`, `predict`), through ``progression.cli.main`` as a user would run them.
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_reliability_support import snapshot
from test_train_support import shared_run

from progression import cli

# Tiny, fast training settings (32 px films, 2 epochs, one thread); each test adds its paths.
FAST = ["data.image_size=32", "train.max_epochs=2", "train.image_epochs=1", "train.threads=1",
        "train.progress=false", "tracking.log_model=false"]


# ------------------------------------------------------------------------------ helpers
def set_cell(root: Path, file: str, line: int, column: str, value: str) -> None:
    """Set one cell of a cohort table (``line`` as the file shows it, header = 1)."""
    with open(root / file, newline="") as handle:
        rows = list(csv.reader(handle))
    rows[line - 1][rows[0].index(column)] = value
    with open(root / file, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def add_line(root: Path, file: str, text: str) -> None:
    with open(root / file, "a") as handle:
        handle.write(text + "\n")


class _Keep(logging.Handler):
    """Formats every record like a console handler would (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def run_cli(capfd) -> Iterator[Callable[..., tuple[int, str]]]:
    """``run_cli(*argv) -> (exit code, all output)``: stdout, stderr and every log record.

    Optuna's logger does not propagate to the root logger, so it is watched too: a trial's
    traceback logged there is as visible to the user as one on stderr.
    """
    keep = _Keep()
    watched = [logging.getLogger(), logging.getLogger("optuna")]
    for logger in watched:
        logger.addHandler(keep)

    def run(*argv: object) -> tuple[int, str]:
        keep.lines.clear()
        # Optuna's console handler (and its colour formatter) keep the stderr of the test
        # that first used them; give them this test's, as a fresh process would have.
        consoles = [o for h in logging.getLogger("optuna").handlers
                    if type(h) is logging.StreamHandler for o in (h, h.formatter)
                    if hasattr(o, "stream")]
        saved = [o.stream for o in consoles]
        for console in consoles:
            console.stream = sys.stderr  # not setStream(): it flushes the old, closed stream
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        finally:
            for console, stream in zip(consoles, saved):
                console.stream = stream
        captured = capfd.readouterr()
        return code, captured.out + captured.err + "\n".join(keep.lines)

    yield run
    for logger in watched:
        logger.removeHandler(keep)


def assert_refused(code: int, output: str, *names: str) -> None:
    """Non-zero exit, no traceback, and the message names every one of ``names``."""
    assert code not in (0, None), output
    assert "Traceback" not in output, output
    for name in names:
        assert name in output, f"{name!r} not named in:\n{output}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The session's shared tiny fit (test_train_support.py): a real checkpoint, its cohort,
    and an MLflow store that already exists (creating one takes seconds)."""
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def paths(tmp_path_factory, trained) -> dict[str, object]:
    """Output locations shared by the module; runs go to their own experiment."""
    base = tmp_path_factory.mktemp("bad_input")
    return {"cache": base / "cache", "runs": base / "runs", "mlflow": trained.tracking_uri}


@pytest.fixture
def settings(paths) -> list[str]:
    return [*FAST, f"data.cache_dir={paths['cache']}", f"train.output_dir={paths['runs']}",
            f"tracking.tracking_uri={paths['mlflow']}", "tracking.experiment=reliability-bad-input"]


@pytest.fixture(scope="module")
def predictions(handmade_cohort, tmp_path_factory) -> Path:
    """A valid predictions table for the handmade cohort (as `progression predict` writes it)."""
    ids = ["p1", "p2", "p3"]
    delta = np.array([2.0, 1.0, 6.0])
    table = pd.DataFrame({
        "patient_id": ids, "index_date": ["2020-01-20", "2020-02-28", "2021-06-12"],
        "horizon_years": 1.0, "svdh_index_pred": [14.0, 3.0, 47.0], "delta_svdh_pred": delta,
        "delta_svdh_lo": delta - 2, "delta_svdh_hi": delta + 2, "p_rapid": [0.1, 0.05, 0.6],
        "risk_score": delta, "note": "",
    })
    path = tmp_path_factory.mktemp("predictions") / "predictions.csv"
    table.to_csv(path, index=False)
    return path


def command(name: str, root: Path, settings: list[str], predictions: Path, out: Path,
            checkpoint: Path | None = None) -> list:
    """The argv of entry point ``name`` reading the cohort at ``root``."""
    if name == "predict":
        return ["predict", "--checkpoint", checkpoint, "--data", root, "--out",
                out / "predictions.csv", "--no-progress"]
    if name == "train":
        return ["train", "--data", root, "--config", "tiny", *settings]
    if name == "tune":
        return ["tune", "--data", root, "--config", "tiny", "--space", "tiny", "--study",
                f"study-{root.parent.name}", "--n-trials", "1", "--no-progress", *settings]
    if name == "evaluate":
        return ["evaluate", "--predictions", predictions, "--data", root, "--out", out / "report",
                "--baselines", "", "--bootstrap", "10", "--no-progress"]
    raise ValueError(name)


# ------------------------------------------------------------------- cohort table defects
def _future_visit(root: Path) -> None:
    set_cell(root, "visits.csv", 2, "visit_date", "2999-01-15")


def _visit_before_birth(root: Path) -> None:
    set_cell(root, "patients.csv", 2, "birth_date", "2019-06-01")  # p1's visits are 2019-01, 2020-01


def _duplicate_row(root: Path) -> None:
    add_line(root, "patients.csv", "p2,1955-11-30,M,64")


def _infinite_covariate(root: Path) -> None:
    set_cell(root, "visits.csv", 3, "crp", "inf")


def _text_in_score(root: Path) -> None:
    set_cell(root, "visits.csv", 2, "svdh_total", "ten")


def _outside_path(root: Path) -> None:
    set_cell(root, "images.csv", 2, "path", "../../etc/passwd")


def _empty_cohort(root: Path) -> None:
    for name in ("patients.csv", "visits.csv", "images.csv", "joint_scores.csv"):
        lines = (root / name).read_text().splitlines()
        (root / name).write_text(lines[0] + "\n")


TABLE_DEFECTS = [
    ("visit in the future", _future_visit, ["visits.csv line 2", "visit_date", "in the future"]),
    ("visit before birth", _visit_before_birth,
     ["visits.csv line 2", "before the patient's birth_date", "fix:"]),
    ("duplicate row", _duplicate_row, ["patients.csv line 5", "duplicate row", "fix:"]),
    ("infinite covariate", _infinite_covariate, ["visits.csv line 3", "crp", "'inf' is infinite"]),
    ("text in a score column", _text_in_score, ["visits.csv line 2", "svdh_total", "'ten'"]),
    ("path outside the cohort", _outside_path,
     ["images.csv line 2", "'../../etc/passwd' points outside the cohort directory"]),
    ("empty cohort", _empty_cohort, ["patients.csv", "cohort is empty: no patients"]),
]


@pytest.mark.parametrize("entry", ["train", "tune", "evaluate", "predict"])
@pytest.mark.parametrize(("what", "edit", "names"), TABLE_DEFECTS, ids=[d[0] for d in TABLE_DEFECTS])
def test_a_broken_cohort_table_is_refused_by_every_command_naming_file_line_and_fix(
    handmade_cohort, copy_cohort, run_cli, settings, predictions, trained, tmp_path, entry, what,
    edit, names
):
    root = copy_cohort(handmade_cohort)
    edit(root)
    before = snapshot(root)
    checkpoint = trained.result.checkpoint_path
    code, output = run_cli(*command(entry, root, settings, predictions, tmp_path, checkpoint))
    assert_refused(code, output, *names)
    assert snapshot(root) == before


_OPENED: list[str] | None = None  # paths opened while a test records them


def _record_opens(event: str, args: tuple) -> None:
    # Audit hooks cannot be removed: this one records only while _OPENED is a list.
    if _OPENED is not None and event == "open" and args and isinstance(args[0], str | os.PathLike):
        _OPENED.append(os.fspath(args[0]))


sys.addaudithook(_record_opens)


def test_an_image_path_outside_the_cohort_is_never_opened_by_train(
    handmade_cohort, copy_cohort, run_cli, settings, tmp_path
):
    root = copy_cohort(handmade_cohort)
    secret = tmp_path / "secret.png"
    secret.write_bytes((root / "images" / "p1_0_hand_left.png").read_bytes())  # a valid image
    set_cell(root, "images.csv", 2, "path", "../secret.png")
    global _OPENED
    _OPENED = opened = []
    try:
        code, output = run_cli("train", "--data", root, "--config", "tiny", *settings)
    finally:
        _OPENED = None
    assert_refused(code, output, "images.csv line 2", "points outside the cohort directory")
    assert any(path.endswith("visits.csv") for path in opened)  # the hook saw the reads
    assert not any("secret" in path for path in opened)


# ------------------------------------------------------------------------- image defects
def _truncate(name: str, keep: float) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / "images" / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return edit


def _dicom_without_pixels(root: Path) -> None:
    import pydicom

    path = root / "images" / "p2_0_hand_right.dcm"
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)


def _zero_bytes(root: Path) -> None:
    (root / "images" / "p3_0_hand_right.jpg").write_bytes(b"")


def _text_as_png(root: Path) -> None:
    (root / "images" / "p1_1_hand_right.png").write_text("this is not an image\n")


def _undecodable(name: str) -> list[str]:
    """What the image cache says about a file it cannot decode: the file and both fixes."""
    return [f"images/{name}", "data.skip_bad_images=true", "progression validate"]


IMAGE_DEFECTS = [
    ("truncated PNG", _truncate("p1_0_hand_left.png", 0.5), _undecodable("p1_0_hand_left.png")),
    ("truncated DICOM", _truncate("p2_1_hand_left.dcm", 0.6), _undecodable("p2_1_hand_left.dcm")),
    ("DICOM without pixel data", _dicom_without_pixels,
     [*_undecodable("p2_0_hand_right.dcm"), "DICOM without pixel data"]),
    ("text file named .png", _text_as_png, _undecodable("p1_1_hand_right.png")),
    # an empty file is found by the table checks already, before any decoding
    ("zero-byte file", _zero_bytes,
     ["images.csv line 11", "images/p3_0_hand_right.jpg is empty (0 bytes)", "copy the image again"]),
]


@pytest.mark.parametrize(("what", "edit", "names"), IMAGE_DEFECTS, ids=[d[0] for d in IMAGE_DEFECTS])
def test_train_stops_before_training_on_an_unreadable_image_and_names_the_fix(
    handmade_cohort, copy_cohort, run_cli, settings, paths, what, edit, names
):
    root = copy_cohort(handmade_cohort)
    edit(root)
    before = snapshot(root)
    runs_before = set(paths["runs"].glob("*/checkpoints/*.ckpt"))
    code, output = run_cli("train", "--data", root, "--config", "tiny", *settings)
    assert_refused(code, output, *names)
    assert set(paths["runs"].glob("*/checkpoints/*.ckpt")) == runs_before  # no training happened
    assert snapshot(root) == before


def test_tune_stops_on_an_unreadable_image_with_one_message(
    handmade_cohort, copy_cohort, run_cli, settings
):
    root = copy_cohort(handmade_cohort)
    _truncate("p2_1_hand_left.dcm", 0.6)(root)
    before = snapshot(root)
    code, output = run_cli(*command("tune", root, settings, predictions=Path(), out=Path()))
    assert_refused(code, output, "images/p2_1_hand_left.dcm", "data.skip_bad_images=true")
    assert snapshot(root) == before


def test_with_skip_bad_images_one_unreadable_image_is_skipped_counted_and_training_runs(
    handmade_cohort, copy_cohort, run_cli, settings, paths
):
    root = copy_cohort(handmade_cohort)
    _truncate("p1_0_hand_left.png", 0.5)(root)
    before = snapshot(root)
    code, output = run_cli("train", "--data", root, "--config", "tiny", *settings,
                           "data.skip_bad_images=true")
    assert code == 0, output
    assert "skipping 1 unreadable image(s)" in output and "p1_0_hand_left.png" in output
    checkpoint = Path(output.split("checkpoint  ")[1].split()[0])
    assert checkpoint.is_file() and paths["runs"] in checkpoint.parents
    assert snapshot(root) == before


def test_unreadable_files_are_reported_as_permission_problems_without_root_privileges(
    handmade_cohort, copy_cohort
):
    """Tests run as root, which reads any file; the CLI runs in a subprocess that drops the
    capabilities that let root ignore file permissions (CAP_DAC_OVERRIDE/READ_SEARCH)."""
    root = copy_cohort(handmade_cohort)
    (root / "images" / "p2_0_hand_left.dcm").chmod(0)
    (root / "joint_scores.csv").chmod(0)
    before = snapshot(root)
    script = textwrap.dedent("""
        import ctypes, sys
        libc = ctypes.CDLL(None, use_errno=True)
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]
        header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
        if libc.capget(ctypes.byref(header), data) != 0:
            sys.exit("capget failed")
        keep = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        data[0].effective &= keep
        data[0].permitted &= keep
        if libc.capset(ctypes.byref(header), data) != 0:
            sys.exit("capset failed")
        from progression.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    proc = subprocess.run([sys.executable, "-c", script, "validate", str(root), "--workers", "1"],
                          capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    if proc.returncode not in (0, 1) and "cap" in output and "failed" in output:
        pytest.skip(f"cannot drop capabilities here: {output.strip()}")
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    assert "p2_0_hand_left.dcm: permission denied; make the file readable" in output
    assert "joint_scores.csv: 1 errors" in output and "cannot be read (Permission denied)" in output
    assert snapshot(root) == before


# --------------------------------------------------------------------- config defects
CONFIG_DEFECTS = [
    ("unknown key", "train:\n  max_epoch: 3\n", ["unknown config key 'train.max_epoch'", "max_epochs"]),
    ("wrong type", "data:\n  image_size: large\n",
     ["config key 'data.image_size'", "expected int", "'large'"]),
    ("unknown section", "trainer:\n  lr: 0.1\n", ["unknown config key 'trainer'", "train"]),
    ("not YAML", "train: [unclosed\n", ["is not valid YAML"]),
]


@pytest.mark.parametrize("entry", ["train", "tune"])
@pytest.mark.parametrize(("what", "text", "names"), CONFIG_DEFECTS, ids=[d[0] for d in CONFIG_DEFECTS])
def test_a_bad_config_file_is_refused_naming_the_file_and_key(
    handmade_cohort, run_cli, settings, tmp_path, entry, what, text, names
):
    config = tmp_path / "my_config.yaml"
    config.write_text(text)
    argv = ["--data", handmade_cohort, "--config", config, *settings]
    extra = ["--study", "cfg", "--space", "tiny", "--n-trials", "1", "--no-progress"]
    code, output = run_cli(entry, *(extra if entry == "tune" else []), *argv)
    assert_refused(code, output, "my_config.yaml", *names)


def test_a_bad_search_space_is_refused_naming_the_key(handmade_cohort, run_cli, settings, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("metric: val/mae_delta_1y\ndirection: minimize\n"
                     "params:\n  train.learning_rate: {type: float, low: 0.001, high: 0.01}\n")
    code, output = run_cli("tune", "--data", handmade_cohort, "--config", "tiny", "--space", space,
                           "--study", "space", "--n-trials", "1", "--no-progress", *settings)
    assert_refused(code, output, "train.learning_rate")


def test_a_bad_override_is_refused_naming_the_key(handmade_cohort, run_cli, settings):
    code, output = run_cli("train", "--data", handmade_cohort, "--config", "tiny", *settings,
                           "train.max_epochs=three")
    assert_refused(code, output, "train.max_epochs", "expected int", "'three'")


# ------------------------------------------------------------------- checkpoint defects
def _random_checkpoint(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _text_checkpoint(path: Path) -> None:
    path.write_text("not a checkpoint\n")


def _empty_checkpoint(path: Path) -> None:
    path.write_bytes(b"")


def _foreign_checkpoint(path: Path) -> None:
    import torch

    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 3}, path)  # not ours


CHECKPOINT_DEFECTS = [
    ("random bytes", _random_checkpoint, "damaged or not a checkpoint"),
    ("text file", _text_checkpoint, "damaged or not a checkpoint"),
    ("zero bytes", _empty_checkpoint, "damaged or not a checkpoint"),
    ("another program's checkpoint", _foreign_checkpoint, "was not written by `progression train`"),
]


@pytest.mark.parametrize("entry", ["train --resume", "evaluate --checkpoint", "predict --checkpoint"])
@pytest.mark.parametrize(("what", "write", "text"), CHECKPOINT_DEFECTS,
                         ids=[d[0] for d in CHECKPOINT_DEFECTS])
def test_a_file_that_is_not_a_progression_checkpoint_is_refused_naming_it(
    handmade_cohort, run_cli, settings, tmp_path, entry, what, write, text
):
    ckpt = tmp_path / "model.ckpt"
    write(ckpt)
    before = ckpt.read_bytes()
    if entry == "train --resume":
        argv = ["train", "--resume", ckpt, "--data", handmade_cohort, *settings]
    else:
        argv = [entry.split()[0], "--checkpoint", ckpt, "--data", handmade_cohort, "--out",
                tmp_path / "out", "--no-progress"]
    code, output = run_cli(*argv)
    assert_refused(code, output, str(ckpt), text)
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize(("override", "key"), [("model.embed_dim=32", "model.embed_dim"),
                                               ("model.backbone=resnet18", "model.backbone"),
                                               ("data.image_size=64", "data.image_size")])
def test_resuming_with_an_incompatible_config_is_refused_naming_the_key(
    trained, run_cli, tmp_path, override, key
):
    last = tmp_path / "last.ckpt"
    last.write_bytes(trained.result.last_checkpoint_path.read_bytes())
    before = last.read_bytes()
    code, output = run_cli("train", "--resume", last, override)
    assert_refused(code, output, f"cannot resume from {last}", key)
    assert last.read_bytes() == before


def test_predict_skips_an_unreadable_image_with_a_warning_and_a_note_on_that_patient(
    trained, copy_cohort, run_cli, tmp_path
):
    root = copy_cohort(trained.cohort)
    images = pd.read_csv(root / "images.csv")
    bad = images.iloc[0]
    _truncate(Path(bad["path"]).relative_to("images").as_posix(), 0.3)(root)
    before = snapshot(root)
    out = tmp_path / "predictions.csv"
    code, output = run_cli("predict", "--checkpoint", trained.result.checkpoint_path, "--data",
                           root, "--out", out, "--no-progress")
    assert code == 0, output
    assert "skipping 1 unreadable image(s)" in output and bad["path"] in output
    table = pd.read_csv(out, dtype={"patient_id": str}, keep_default_na=False)
    noted = table.loc[table["note"].str.contains("1 unreadable image(s) skipped", regex=False)]
    assert set(noted["patient_id"]) == {bad["patient_id"]}
    assert table["patient_id"].nunique() == images["patient_id"].nunique()  # nobody dropped
    assert snapshot(root) == before


@pytest.mark.parametrize("entry", ["predict", "evaluate", "enrich"])
def test_output_inside_the_cohort_directory_is_refused_and_nothing_is_written_there(
    trained, copy_cohort, predictions, run_cli, entry
):
    root = copy_cohort(trained.cohort)
    before = snapshot(root)
    if entry == "predict":
        argv = ["predict", "--checkpoint", trained.result.checkpoint_path, "--data", root,
                "--out", root / "visits.csv", "--no-progress"]
    elif entry == "evaluate":
        argv = ["evaluate", "--predictions", predictions, "--data", root, "--out", root / "report",
                "--baselines", "", "--no-progress"]
    else:
        argv = ["enrich", "--predictions", predictions, "--outcomes", root, "--out",
                root / "enrichment", "--no-progress"]
    code, output = run_cli(*argv)
    assert_refused(code, output, "inside the cohort directory")
    assert snapshot(root) == before


# --------------------------------------------------------------- predictions-table defects
def _set_first(column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[0, column] = value
        return frame

    return edit


PREDICTION_DEFECTS = [
    ("infinite risk score", _set_first("risk_score", "inf"), ["{path}", "line 2", "risk_score"]),
    ("text in p_rapid", _set_first("p_rapid", "high"), ["{path}", "line 2", "p_rapid", "'high'"]),
    ("date that is not a date", _set_first("index_date", "2020-31-01"),
     ["{path}", "line 2", "index_date"]),
    ("duplicate row", lambda f: pd.concat([f, f.iloc[:1]]), ["patient p1", "one row per patient"]),
    ("missing column", lambda f: f.drop(columns="risk_score"), ["{path}", "risk_score"]),
]


@pytest.mark.parametrize("entry", ["evaluate", "enrich"])
@pytest.mark.parametrize(("what", "edit", "names"), PREDICTION_DEFECTS,
                         ids=[d[0] for d in PREDICTION_DEFECTS])
def test_a_broken_predictions_table_is_refused_naming_the_line_and_column(
    handmade_cohort, predictions, run_cli, tmp_path, entry, what, edit, names
):
    path = tmp_path / "predictions.csv"
    edit(pd.read_csv(predictions, dtype={"patient_id": str})).to_csv(path, index=False)
    before = path.read_bytes()
    code, output = run_cli(*predictions_command(entry, path, handmade_cohort, tmp_path))
    assert_refused(code, output, *(n.format(path=path) for n in names))
    assert path.read_bytes() == before


def predictions_command(entry: str, path: Path, cohort: Path, out: Path) -> list:
    if entry == "evaluate":
        return ["evaluate", "--predictions", path, "--data", cohort, "--out", out / "report",
                "--baselines", "", "--no-progress"]
    return ["enrich", "--predictions", path, "--out", out / "enrich", "--no-progress"]


@pytest.mark.parametrize("name", ["predictions.csv", "predictions.txt"])
@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 8], ids=["zero bytes", "binary"])
@pytest.mark.parametrize("entry", ["evaluate", "enrich"])
def test_a_predictions_file_that_is_not_csv_is_refused_as_a_predictions_file(
    handmade_cohort, run_cli, tmp_path, entry, content, name
):
    path = tmp_path / name
    path.write_bytes(content)
    code, output = run_cli(*predictions_command(entry, path, handmade_cohort, tmp_path))
    assert_refused(code, output, f"predictions file '{path}'", "not a readable CSV")
    assert path.read_bytes() == content
