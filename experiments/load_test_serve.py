"""Load test of `progression serve` (issue #18): latency and throughput on this machine.

Starts the real service (`progression serve`, its own process, 127.0.0.1, a free port, a bearer
token) and sends forecast requests from an asyncio + httpx client, loopback only, bounded in
count and time. Two patients, films by path under the cohort (the image root):

- ``1-visit``: one visit with its films (the index visit of a simulated patient);
- ``6-visit``: six visits with their films (the first six of a patient with six or more).

For each: unloaded latency (one client, ``--sequential`` requests), then ``--requests``
requests from ``--concurrency`` clients at once: p50 / p95 latency (ms), requests/s, and the
count of answers that were not 200 (must be 0). Writes ``experiments/results/load_test_serve.json``
and ``.md``.

    nice python experiments/load_test_serve.py                     # simulates + trains tiny first
    nice python experiments/load_test_serve.py --checkpoint best.ckpt --cohort cohort/

Without ``--checkpoint`` a 30-patient cohort (64 px films, seed 0) is simulated into
``--work`` (default: a folder in the system's temporary directory) and the tiny config trained on it (about a minute on 2 cores), then reused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _prepare(work: Path) -> tuple[Path, Path]:
    """(checkpoint, cohort): the tiny model trained on a simulated cohort, made once."""
    cohort = work / "cohort"
    done = work / "checkpoint.txt"
    if done.is_file():
        return Path(done.read_text().strip()), cohort
    from progression.config import load_config
    from progression.simulate import SimulationConfig, simulate_cohort
    from progression.train import fit

    if not cohort.is_dir():
        simulate_cohort(cohort, SimulationConfig(n_patients=30, seed=0, image_size=64),
                        progress=False)
    overrides = [f"data.path={cohort}", f"data.cache_dir={work / 'cache'}",
                 f"train.output_dir={work / 'runs'}", "train.progress=false",
                 f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}"]
    result = fit(load_config("tiny", overrides))
    done.write_text(str(result.checkpoint_path))
    return Path(result.checkpoint_path), cohort


def _bodies(cohort_dir: Path, covariates: tuple[list[str], list[str]]) -> dict[str, dict]:
    from progression.cohort import read_cohort
    from progression.serve.adapter import request_from_cohort

    cohort = read_cohort(cohort_dir)
    counts = cohort.visits["patient_id"].value_counts()
    six = counts[counts >= 6].index
    if not len(six):
        raise SystemExit(f"{cohort_dir}: no patient has 6 visits; give a larger cohort")
    imaged = set(cohort.images["patient_id"])
    long = request_from_cohort(cohort, next(p for p in six if p in imaged), covariates=covariates)
    long["visits"] = long["visits"][:6]
    one = request_from_cohort(cohort, next(p for p in counts.index[::-1] if p in imaged),
                              covariates=covariates)
    one["visits"] = [next(v for v in reversed(one["visits"]) if v["images"])]
    return {"1-visit": one, "6-visit": long}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _load(url: str, headers: dict, body: dict, n: int, concurrency: int,
                max_seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    failures: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    deadline = time.perf_counter() + max_seconds

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty() and time.perf_counter() < deadline:
            queue.get_nowait()
            start = time.perf_counter()
            try:
                response = await http.post("/v1/forecast", json=body, headers=headers)
                key = None if response.status_code == 200 else str(response.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            if key is None:
                latencies.append(time.perf_counter() - start)
            else:
                failures[key] = failures.get(key, 0) + 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = sorted(1000 * t for t in latencies)
    pct = (lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]) if ms else (lambda q: float("nan"))
    return {"requests": len(ms) + sum(failures.values()), "ok": len(ms), "failures": failures,
            "concurrency": concurrency, "p50_ms": round(pct(0.50), 1),
            "p95_ms": round(pct(0.95), 1), "requests_per_s": round(len(ms) / wall, 2),
            "wall_s": round(wall, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="model to serve (default: train tiny in --work)")
    parser.add_argument("--cohort", help="format-v1 cohort whose patients are sent")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "progression_load_test"),
                        help="where the default model is trained and kept")
    parser.add_argument("--requests", type=int, default=300, help="per patient (default 300)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=30, help="unloaded requests per patient")
    parser.add_argument("--max-seconds", type=float, default=300, help="per load phase")
    parser.add_argument("--machine", default=platform.platform(), help="named in the results")
    args = parser.parse_args()

    if args.checkpoint:
        checkpoint, cohort = Path(args.checkpoint), Path(args.cohort)
    else:
        checkpoint, cohort = _prepare(Path(args.work).resolve())
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    token_file = work / "token.txt"
    token_file.write_text(token)
    os.chmod(token_file, 0o600)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"  # loopback only
    server = subprocess.Popen(
        [sys.executable, "-m", "progression.cli", "serve", "--checkpoint", str(checkpoint),
         "--image-root", str(cohort), "--port", str(port), "--token-file", str(token_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start:\n{server.stderr.read()}")
            time.sleep(0.5)
        info = httpx.get(f"{url}/v1/model", headers=headers).json()
        covariates = (info["config"]["static_covariates"], info["config"]["visit_covariates"])
        results = {"machine": args.machine, "cpus": os.cpu_count(),
                   "load_average_before": os.getloadavg(), "model": info["model_version"],
                   "image_size": info["config"]["image_size"], "patients": {}}
        for name, body in _bodies(cohort, covariates).items():
            films = sum(len(v["images"]) for v in body["visits"])
            warm = asyncio.run(_load(url, headers, body, 5, 1, 60))  # first requests warm up
            alone = asyncio.run(_load(url, headers, body, args.sequential, 1, args.max_seconds))
            loaded = asyncio.run(_load(url, headers, body, args.requests, args.concurrency,
                                       args.max_seconds))
            results["patients"][name] = {"visits": len(body["visits"]), "films": films,
                                         "warm_up_failures": warm["failures"],
                                         "one_client": alone, "concurrent": loaded}
            print(f"{name} ({films} films): 1 client p50 {alone['p50_ms']} ms, p95 "
                  f"{alone['p95_ms']} ms; {loaded['concurrency']} clients p50 "
                  f"{loaded['p50_ms']} ms, p95 {loaded['p95_ms']} ms, "
                  f"{loaded['requests_per_s']} req/s, failures {loaded['failures'] or 0}",
                  flush=True)
        results["load_average_after"] = os.getloadavg()
    finally:
        server.terminate()
        server.wait(30)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load_test_serve.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = ["| patient | films | clients | requests | failures | p50 ms | p95 ms | requests/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["patients"].items():
        for phase in ("one_client", "concurrent"):
            p = r[phase]
            rows.append(f"| {name} | {r['films']} | {p['concurrency']} | {p['requests']} | "
                        f"{sum(p['failures'].values())} | {p['p50_ms']} | {p['p95_ms']} | "
                        f"{p['requests_per_s']} |")
    (RESULTS / "load_test_serve.md").write_text(
        f"# `progression serve` load test\n\nMachine: {results['machine']} ({results['cpus']} "
        f"CPUs; load average before {results['load_average_before'][0]:.1f}). Model: tiny "
        f"config, {results['image_size']} px films, {results['model']}.\n"
        "Command: `nice python experiments/load_test_serve.py`\n\n" + "\n".join(rows) + "\n")
    print(f"-> {RESULTS / 'load_test_serve.md'}")
    failed = sum(sum(r[p]["failures"].values()) for r in results["patients"].values()
                 for p in ("one_client", "concurrent"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
