"""Every ``progression ...`` line the documentation shows is one the command line accepts.

The README and docs/*.md are read as a user would copy them: shell code blocks (``bash``,
``sh``, ``shell``, ``console``), ``\\`` continuations joined, comments dropped, ``&&`` / ``;``
chains split and leading ``NAME=value`` environment assignments skipped. Each command goes
through the real parser (``progression.cli.build_parser``), its ``section.key=value``
overrides through the config loader, and a bundled ``--config`` name must exist; nothing is
run. Placeholders such as ``runs/<run>/...`` are ordinary strings to the parser.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from progression.cli import build_parser
from progression.config import load_config, resolve_config_path
from progression.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _open_quote(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return True
    return False


def documented_commands(markdown: Path) -> list[tuple[str, list[str]]]:
    """``("FILE:LINE", argv)`` for each ``progression`` command in the file's shell blocks."""
    found: list[tuple[str, list[str]]] = []
    language: str | None = None
    pending, start = "", 0
    for number, line in enumerate(markdown.read_text().splitlines(), 1):
        fence = line.strip()
        if fence.startswith("```"):
            language = None if language is not None else fence[3:].strip() or "text"
            pending = ""
            continue
        if language not in SHELL_BLOCKS:
            continue
        if not pending:
            start = number
        text = line.strip()
        if text.startswith("$ "):
            text = text[2:]
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        command, pending = pending + text, ""
        if _open_quote(command):  # a quoted argument (e.g. JSON for curl) spans lines
            pending = command + "\n"
            continue
        for segment in re.split(r"\s(?:&&|;|\|\|)\s", command):
            words = shlex.split(segment, comments=True)
            if words and words[-1] == "&":  # started in the background
                words.pop()
            while words and _ENV_ASSIGNMENT.match(words[0]):
                words.pop(0)
            if words and words[0] == "progression":
                found.append((f"{markdown.relative_to(ROOT)}:{start}", words))
    return found


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = [command for doc in DOCUMENTS for command in documented_commands(doc)]


def test_the_readme_and_docs_show_commands_to_check():
    readme = [where for where, _ in COMMANDS if where.startswith("README.md")]
    assert len(readme) >= 12  # the quick start and the everyday commands
    commands = {argv[1] for _, argv in COMMANDS if len(argv) > 1}
    assert {"simulate", "train", "predict", "evaluate", "tune", "register"} <= commands


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_is_accepted_by_the_cli(where, argv):
    line = shlex.join(argv)
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{where}: the CLI refuses `{line}` (exit {exc.code}); see the message above")
    try:
        load_config(None, getattr(args, "overrides", None) or ())
        config = getattr(args, "config", None)
        if config and "/" not in config and not config.endswith(".yaml"):
            resolve_config_path(config)  # a bundled name must exist
    except ConfigError as exc:
        pytest.fail(f"{where}: `{line}`: {exc}")


def test_exponent_floats_are_accepted_on_the_command_line():
    args = build_parser().parse_args(
        ["train", "--data", "cohort", "--config", "tiny", "train.lr=1e-4", "train.image_lr=3E-5"])
    cfg = load_config(args.config, args.overrides)
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.image_lr == pytest.approx(3e-5)


def test_exponent_floats_are_accepted_in_a_config_file(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("train:\n  lr: 1e-4\n  weight_decay: 5e-6\n")
    cfg = load_config(path)
    assert (cfg.train.lr, cfg.train.weight_decay) == (pytest.approx(1e-4), pytest.approx(5e-6))


def test_train_with_an_exponent_learning_rate_trains(tmp_path_factory, tmp_path, capsys):
    from mlflow import MlflowClient
    from test_train_support import simulated_cohort, tiny_overrides

    from progression.cli import main

    cohort = simulated_cohort(tmp_path_factory)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    overrides = tiny_overrides(cohort, tmp_path, uri, **{
        "train.max_epochs": 2, "train.image_epochs": 0, "tracking.log_model": False})

    status = main(["train", "--config", "tiny", *overrides, "train.lr=1e-4"])

    assert status == 0
    run_id = re.search(r"run id\s+(\w+)", capsys.readouterr().out).group(1)
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert float(run.data.params["train.lr"]) == pytest.approx(1e-4)
