"""Serve one patient's forecast over HTTP (JSON or FHIR R4), from one loaded model.

Binds 127.0.0.1 unless told otherwise; another address needs --token-file (requests then
send 'Authorization: Bearer <token>'). See docs/serve.md for requests and the FHIR mapping.

Examples:
  progression serve --checkpoint runs/<run_id>/checkpoints/best.ckpt --image-root films/
  progression serve --checkpoint models:/progression-ra@champion --host 0.0.0.0 --token-file token.txt
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", required=True,
                        help="a .ckpt file or an MLflow model URI (runs:/ID/model, models:/NAME@ALIAS)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s; others need --token-file)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default: %(default)s)")
    parser.add_argument("--image-root", default=None,
                        help="directory that films given by path must lie under (default: none, "
                        "films only as uploads)")
    parser.add_argument("--token-file", default=None,
                        help="file holding the bearer token every /v1 request must send")
    parser.add_argument("--max-body-mb", type=float, default=32.0,
                        help="largest request body, MiB (default: %(default)s)")
    parser.add_argument("--max-images", type=int, default=48,
                        help="most films in one request (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds one forecast may take before a 504 (default: %(default)s)")
    parser.add_argument("--decode-threads", type=int, default=4,
                        help="films decoded at once across requests (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=None,
                        help="forecasts through the network at once (default: one per CPU core)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per forecast (default: %(default)s; parallel "
                        "requests then share the cores)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI for runs:/ and models:/ (default: $MLFLOW_TRACKING_URI)")


def run(args: argparse.Namespace) -> int:
    from progression.errors import ConfigError
    from progression.serve.safety import image_root, read_token

    token = read_token(args.token_file, args.host)  # refuse an open non-loopback bind first
    root = image_root(args.image_root)
    for name, value in (("--max-body-mb", args.max_body_mb), ("--max-images", args.max_images),
                        ("--timeout", args.timeout), ("--decode-threads", args.decode_threads),
                        ("--threads", args.threads),
                        ("--parallel", 1 if args.parallel is None else args.parallel)):
        if value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")

    import os

    import torch
    import uvicorn

    from progression.serve.app import Limits, create_app
    from progression.serve.predictor import Predictor

    torch.set_num_threads(args.threads)
    predictor = Predictor(args.checkpoint, args.tracking_uri, args.decode_threads,
                          args.parallel or os.cpu_count() or 1)
    limits = Limits(int(args.max_body_mb * 2**20), args.max_images, args.timeout)
    app = create_app(predictor, root, token, limits)
    print(f"serving model {predictor.version} on http://{args.host}:{args.port} "
          f"(docs: /docs; {'token required' if token else 'no token'})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning",
                timeout_graceful_shutdown=5)
    predictor.close()
    return 0
