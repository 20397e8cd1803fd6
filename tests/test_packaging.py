"""The built wheel works away from the checkout, and a logged model works without the package.

A wheel is built from a copy of the sources (offline, with the installed setuptools) and
installed with ``--no-deps`` into a fresh virtual environment whose dependencies come from
this test environment's site-packages through a ``.pth`` path entry (torch is not downloaded
again; the editable install of the checkout is not visible there, since ``.pth`` files of a
path entry are not processed). Commands then run from a directory outside the repository, so
bundled configs can only come from the installed package.

The logged MLflow model is checked in a second fresh environment that holds its
dependencies but not ``progression``: the model's own code (``code_paths``) must be enough
to load it in another process and to serve it with ``mlflow models serve`` on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from pg import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPENDENCIES = sysconfig.get_paths()["purelib"]  # this environment's site-packages


def _fresh_venv(path: Path) -> Path:
    """A new virtual environment at ``path`` that sees this environment's dependencies only."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(DEPENDENCIES + "\n")
    # The console script pip would have made when installing uvicorn here (`mlflow models
    # serve` starts `uvicorn` from PATH).
    uvicorn = path / "bin" / "uvicorn"
    uvicorn.write_text(f"#!{python}\nimport sys\nfrom uvicorn.main import main\nsys.exit(main())\n")
    uvicorn.chmod(0o755)
    return python


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("PROGRESSION_TREE", "PYTHONPATH", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _run(argv: list[str], cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=_clean_env(**env), capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the sources (the checkout is left as it is)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "progression", source / "progression",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(root / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    (built,) = (root / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """``bin/`` of a fresh virtual environment with the wheel installed (``--no-deps``)."""
    python = _fresh_venv(tmp_path_factory.mktemp("venv") / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    return python.parent


def test_wheel_is_named_ra_progression_and_ships_the_configs_and_the_reader(wheel):
    assert wheel.name.startswith("ra_progression-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"progression/configs/tiny.yaml", "progression/configs/default.yaml",
            "progression/configs/search/tiny.yaml", "progression/cli.py",
            "progression/readers/simulated_256px.ckpt"} <= names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "Name: ra-progression" in zipfile.ZipFile(wheel).read(metadata).decode()


def test_installed_wheel_finds_bundled_configs_outside_the_checkout(installed, tmp_path):
    code = ("import progression; from progression.config import load_config; "
            "from progression.tuning.space import load_search_space; cfg = load_config('tiny'); "
            "space = load_search_space('tiny', cfg); "
            "print(progression.__file__, cfg.data.image_size, len(space.params))")
    result = _run([str(installed / "python"), "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    location, image_size, n_params = result.stdout.split()
    assert Path(location).is_relative_to(installed.parent)  # the wheel's copy, not the checkout
    assert (int(image_size), int(n_params) > 0) == (64, True)

    assert _run([str(installed / "progression"), "demo", "--help"], tmp_path).returncode == 0
    # --config tiny is found (the command goes on to ask for the cohort it needs)
    train = _run([str(installed / "progression"), "train", "--config", "tiny"], tmp_path)
    assert train.returncode == 2
    assert "no cohort given" in train.stderr and "not found" not in train.stderr


@pytest.mark.slow
def test_demo_runs_from_the_installed_wheel_on_its_bundled_reader(installed, tmp_path):
    """The first run a new user makes: the reader shipped in the wheel, 256 px films (a few
    patients and sequence epochs here), ending with the table of what the films add."""
    # 24 patients, 30% validation: the conformal calibration after training needs validation
    # patients with an observable 1- or 2-year outcome.
    result = _run([str(installed / "progression"), "demo", "--out", "demo", "--patients", "24",
                   "--no-progress", "train.max_epochs=2", "data.val_fraction=0.3"], tmp_path,
                  timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (tmp_path / "demo" / "mlruns.db").is_file()
    assert "sequence model on the kept reader" in result.stdout
    assert "same model without films" in result.stdout
    assert "linear extrapolation" in result.stdout


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A fresh environment with the model's dependencies but without ``progression``."""
    python = _fresh_venv(tmp_path_factory.mktemp("bare") / "venv")
    found = _run([str(python), "-c", "import progression"], tmp_path_factory.getbasetemp())
    assert found.returncode != 0, "progression must not be importable in the bare environment"
    return python


def _download_model(run, destination: Path) -> Path:
    """The shared run's logged model, found through a client of its own store (a models:/
    URI alone is looked up in the process-wide registry, which other tests may point
    elsewhere)."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    model_id = run.result.model_uri.rsplit("/", 1)[-1]
    location = MlflowClient(run.tracking_uri).get_logged_model(model_id).artifact_location
    return Path(download_artifacts(artifact_uri=location, tracking_uri=run.tracking_uri,
                                   dst_path=str(destination)))


def test_logged_model_pins_its_dependencies_and_carries_its_code(tmp_path_factory):
    from test_train_support import shared_run

    from progression.pyfunc_model import model_requirements

    run = shared_run(tmp_path_factory)
    model = _download_model(run, tmp_path_factory.mktemp("model"))
    requirements = (model / "requirements.txt").read_text().split()
    assert not any(r.split("==")[0] == "progression" for r in requirements)  # PyPI's is unrelated
    assert set(model_requirements()) <= set(requirements)
    assert any(r.startswith("torch==") for r in requirements)
    assert (model / "code" / "progression" / "tracking" / "runs.py").is_file()
    assert (model / "code" / "progression" / "configs" / "tiny.yaml").is_file()


@pytest.mark.slow
def test_logged_model_loads_in_another_process_without_the_package(bare_python, tmp_path_factory,
                                                                   tmp_path):
    from test_train_support import shared_run

    run = shared_run(tmp_path_factory)
    code = ("import sys, mlflow.pyfunc, pandas as pd; "
            "model = mlflow.pyfunc.load_model(sys.argv[1]); "
            "out = model.predict(pd.DataFrame({'cohort_dir': [sys.argv[2]]})); "
            "import progression; print(len(out), progression.__file__)")
    result = _run([str(bare_python), "-c", code, run.result.model_uri, str(run.cohort)], tmp_path,
                  timeout=180, MLFLOW_TRACKING_URI=run.tracking_uri)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, location = result.stdout.split()[-2:]
    assert int(rows) > 0
    assert "/code/progression/" in location  # the model's own copy of the code


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_request(bare_python, tmp_path_factory, tmp_path):
    from test_train_support import shared_run

    run = shared_run(tmp_path_factory)
    model = str(_download_model(run, tmp_path / "model"))
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [str(bare_python), "-m", "mlflow", "models", "serve", "-m", model, "--env-manager",
         "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=_clean_env(PATH=f"{bare_python.parent}:{os.environ['PATH']}"),
        stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        body = json.dumps({"dataframe_split": {"columns": ["cohort_dir"],
                                               "data": [[str(run.cohort)]]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    answer = json.load(response)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve did not answer:\n"
                                f"{(tmp_path / 'serve.log').read_text()[-3000:]}")
                time.sleep(1)
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already if it failed to start
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
    predictions = answer["predictions"]
    assert predictions and {"patient_id", "horizon_years"} <= set(predictions[0])
