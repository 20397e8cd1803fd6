"""What keeps the service safe by default: loopback binding, the bearer token, the body size
limit and the image root every film path must stay under.

Each check answers with the project's one JSON error shape (:func:`error_response`), never a
traceback, and nothing here logs request content.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from pathlib import Path

from progression.errors import ConfigError

LOOPBACK_NAMES = ("localhost",)


class RequestProblem(Exception):
    """A request the service refuses: HTTP ``status``, the request ``field`` at fault."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


def error_payload(status: int, field: str | None, message: str, request_id: str) -> dict:
    return {"error": {"status": status, "field": field, "message": message},
            "request_id": request_id}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: only this machine can connect."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | Path | None, host: str) -> str | None:
    """The bearer token in ``token_file`` (one line); required when ``host`` is not loopback."""
    if token_file is None:
        if not is_loopback(host):
            raise ConfigError(f"--host {host} lets other machines connect; give --token-file F "
                              "(a file holding a long random token, e.g. `openssl rand -hex 32 "
                              "> F`) or bind 127.0.0.1")
        return None
    path = Path(token_file)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: cannot be read ({exc.strerror})") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ConfigError(f"--token-file {path}: the token must be one line of at least 16 "
                          "characters without spaces (e.g. `openssl rand -hex 32 > F`)")
    return token


def token_matches(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                               token.encode())


def image_root(path: str | Path | None) -> Path | None:
    if path is None:
        return None
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--image-root {path}: not a directory; give the directory that holds "
                          "the films requests refer to")
    return root.resolve()


def confined_path(root: Path | None, path: str, field: str) -> str:
    """The resolved file ``path`` (relative to ``root``) if it stays under ``root`` after
    symlinks are followed; 403 otherwise, 422 when the file does not exist."""
    if root is None:
        raise RequestProblem(403, field, f"{field}: this service has no --image-root, so films "
                                         "by path are refused; send the file as data_base64")
    target = Path(os.path.realpath(root / path))  # an absolute path replaces root: checked below
    if not target.is_relative_to(root):
        raise RequestProblem(403, field, f"{field}: the path leaves the image root; give a path "
                                         "relative to the service's --image-root")
    if not target.is_file():
        raise RequestProblem(422, field, f"{field}: no such file under the image root; check "
                                         "the path (relative to --image-root)")
    return str(target)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 before it is parsed.

    A declared Content-Length is checked first (the server stops reading past it); a body
    without one (chunked) is read here up to the limit and handed on whole.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(scope, send)
        # Read the body here, never past the limit (a chunked body declares no length).
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await self._refuse(scope, send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, send):
        mb = self.max_bytes / 2**20
        body = json.dumps(error_payload(
            413, "body", f"the request body is over {mb:g} MiB (--max-body-mb); send fewer or "
                         "smaller films, or films by path under the image root",
            scope.get("state", {}).get("request_id", "-"))).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
