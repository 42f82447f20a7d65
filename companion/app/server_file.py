"""COMPANION_HOME/server.json: how `say`, `chat`, `ps` and `serve --stop` find a running server.

It holds the server's url, a random bearer token, its pid, database URL and
start time. It is written 0600 (the token is the only thing between another
local user and every stored conversation) and removed when the server exits
cleanly; a file left by a killed server is recognised as stale because its
server no longer answers. Torch-free on purpose: the client side of `say`
must not pay for importing the model code.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from .settings import data_dir

NAME = "server.json"


def server_path() -> Path:
    """Where the file is; not created here, so looking for a server never makes a data folder."""
    home = os.environ.get("COMPANION_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".companion") / NAME


def write(info: dict) -> Path:
    """Write atomically, owner-only from the first byte (no window where the token is world-readable)."""
    path = data_dir() / NAME
    tmp = path.with_name(f".{NAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def read() -> dict | None:
    """The file's contents, or None when there is none (or it cannot be read as a server's file)."""
    try:
        info = json.loads(server_path().read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(info, dict) and all(isinstance(info.get(k), str) for k in ("url", "token")) \
        and isinstance(info.get("pid"), int)
    return info if ok else None


def remove_if(pid: int) -> None:
    """Remove the file only when it still names `pid` (a later server's file is not ours to remove)."""
    info = read()
    if info is not None and info.get("pid") == pid:
        try:
            server_path().unlink()
        except FileNotFoundError:
            pass


def call(info: dict, method: str, path: str, body: dict | None = None, *, timeout: float = 5.0):
    """One JSON request to the server with its token; returns the opened response (caller closes it).

    Raises urllib.error.HTTPError for a 4xx/5xx and OSError when nothing answers.
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(info["url"].rstrip("/") + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {info['token']}",
                                          "Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=timeout)


def status(info: dict, *, timeout: float = 2.0) -> dict | None:
    """GET /api/server: the server's own account of itself, or None when it does not answer as ours."""
    try:
        with call(info, "GET", "/api/server", timeout=timeout) as resp:
            answer = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.HTTPError):
        return None
    return answer if isinstance(answer, dict) and answer.get("pid") == info["pid"] else None


def running() -> tuple[dict, dict] | None:
    """(server.json, the server's status) when a server for this data folder answers; else None."""
    info = read()
    if info is None:
        return None
    answer = status(info)
    return None if answer is None else (info, answer)
