"""MLflow tracking server down: `train` fails fast, before any image is decoded or any
epoch runs, with a message that says what to do; never minutes of HTTP retries."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from progression import cli

FAST = ["data.image_size=32", "train.max_epochs=2", "train.image_epochs=1", "train.threads=1",
        "train.progress=false", "tracking.log_model=false"]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def train_argv(cohort, tmp_path, uri: str, *extra: str) -> list[str]:
    return ["train", "--data", str(cohort), "--config", "tiny", *FAST,
            f"data.cache_dir={tmp_path / 'cache'}", f"train.output_dir={tmp_path / 'runs'}",
            f"tracking.tracking_uri={uri}", *extra]


def assert_failed_before_training(tmp_path) -> None:
    """No image decoded into the cache, no run directory, no checkpoint."""
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.timeout(120)  # MLflow's default HTTP retries alone would take minutes
@pytest.mark.parametrize("where", ["closed port", "unknown host", "silent server"])
def test_unreachable_tracking_server_fails_fast_before_training_with_the_fix(
    handmade_cohort, tmp_path, capfd, closed_port, silent_server, where
):
    uri = {
        "closed port": f"http://127.0.0.1:{closed_port}",
        "unknown host": "http://tracking.invalid:5000",  # .invalid never resolves (RFC 2606)
        "silent server": f"http://127.0.0.1:{silent_server}",
    }[where]
    code = cli.main(train_argv(handmade_cohort, tmp_path, uri))
    captured = capfd.readouterr()
    output = captured.out + captured.err
    assert code == 2, output
    assert "Traceback" not in output
    assert f"cannot reach the MLflow tracking store '{uri}'" in output
    assert "tracking.tracking_uri" in output and "mlflow server" in output  # how to fix it
    assert_failed_before_training(tmp_path)


def test_a_plain_directory_as_tracking_uri_is_refused_with_the_sqlite_alternative(
    handmade_cohort, tmp_path, capfd
):
    code = cli.main(train_argv(handmade_cohort, tmp_path, str(tmp_path / "mlruns")))
    output = "".join(capfd.readouterr())
    assert code == 2 and "Traceback" not in output
    assert "MLflow no longer accepts the file store" in output and "sqlite:///" in output
    assert_failed_before_training(tmp_path)
