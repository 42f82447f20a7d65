"""`companion serve`, `companion serve --stop` and `companion ps`.

The server loads the model once, binds its socket (so --port 0 has its real
port before anyone is told), writes server.json (0600, with a fresh random
token), serves until SIGTERM/Ctrl-C or --keep-alive seconds without a request or
a turn, then finishes or cancels the running turn and removes server.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import sys
import time

from . import server_file
from .errors import CompanionError
from .paths import shown_url
from .settings import database_url

LOOPBACK = ("localhost",)


def keep_alive_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value != -1 and not 0 <= value < 1e9:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range (seconds >= 0, or -1 for never)")
    return value


def port_arg(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..65535; 0 picks a free one)")
    return int(text)


def add_parser(sub) -> None:
    sv = sub.add_parser("serve", help="keep the model loaded and serve OpenAI-compatible chat completions",
                        description="Serve /v1/chat/completions and /api/sessions. Every request needs "
                                    "`Authorization: Bearer TOKEN`, the random token written to "
                                    "COMPANION_HOME/server.json (0600), also on loopback.")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; any other is reachable from other machines: "
                         "the token is always required, but it travels unencrypted)")
    sv.add_argument("--port", type=port_arg, default=0, help="port (default 0: a free one; server.json says which)")
    sv.add_argument("--keep-alive", type=keep_alive_arg, default=300.0, metavar="SECONDS",
                    help="exit after this many idle seconds (default 300; -1 never)")
    sv.add_argument("--queue", type=int, default=16, help="turns that may wait for the model (default 16); "
                                                           "more are refused with 429 and Retry-After")
    sv.add_argument("--max-body", type=int, default=1 << 20, help="largest request body in bytes (default 1 MiB)")
    sv.add_argument("--cors", action="append", default=None, metavar="ORIGIN",
                    help="allow browser requests from ORIGIN (repeatable; default: no CORS)")
    sv.add_argument("--stop", action="store_true", help="stop the server of this data folder and exit")
    sv.add_argument("--model", default=None, help="Hugging Face id, local folder or .gguf path (default: embedded "
                                                   "SmolLM2-135M)")
    sv.add_argument("--max-new-tokens", type=int, default=200, help="a reply's length unless a request says "
                                                                      "(default 200)")
    sv.set_defaults(func=cmd_serve)
    ps = sub.add_parser("ps", help="the running server (if any) and its turns in flight")
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(func=cmd_ps)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in LOOPBACK


def cmd_ps(args) -> int:
    found = server_file.running()
    if found is None:
        print(json_dumps({"server": None}) if args.json else "no server")
        return 0
    info, st = found
    if args.json:
        print(json_dumps({"server": st}))
        return 0
    print(f"server {info['url']}  pid {st['pid']}  model {st.get('model')}  db {st.get('db')}  "
          f"started {st.get('started')}  idle {st.get('idle_seconds')} s")
    for j in st.get("in_flight", []):
        print(f"  {j['session']:<20} {j['action']:<6} {j['state']:<8} {j['pieces']} pieces  {j['seconds']} s")
    if not st.get("in_flight"):
        print("  no turns in flight")
    return 0


def json_dumps(obj) -> str:
    return json.dumps(obj, indent=2)


def stop_server() -> int:
    info = server_file.read()
    if info is None:
        print("no server")
        return 0
    if server_file.status(info) is None:  # not ours (any more): never signal a pid we cannot vouch for
        server_file.remove_if(info["pid"])
        print(f"no server (removed a stale server.json naming pid {info['pid']})")
        return 0
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(info["pid"]):
        time.sleep(0.1)
    if _alive(info["pid"]):
        raise CompanionError(f"the server (pid {info['pid']}) did not stop within 60 s")
    print(f"stopped the server at {info['url']} (pid {info['pid']})")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie child (tests) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def cmd_serve(args) -> int:
    if args.stop:
        return stop_server()
    import uvicorn

    from .server import Api, build_app
    from .service import Companion
    from .worker import Worker

    if args.queue < 1 or args.max_body < 1024:
        raise CompanionError("--queue must be at least 1 and --max-body at least 1024")
    found = server_file.running()
    if found is not None:
        raise CompanionError(f"a server for this data folder is already running at {found[0]['url']} "
                             f"(pid {found[0]['pid']}); `companion serve --stop` ends it")
    if not _is_loopback(args.host):
        print(f"companion serve: listening on {args.host}, reachable from other machines; every request still "
              "needs the token, which plain HTTP does not encrypt", file=sys.stderr)
    url_db = database_url(args.db)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:  # bound before the model loads: a taken port fails at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise CompanionError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    port = sock.getsockname()[1]
    comp = Companion(db_url=url_db, model=args.model, max_new_tokens=args.max_new_tokens)
    comp.warm_up("default")  # the model and the default recipe loaded before anyone is told we are up
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    started = dt.datetime.now(dt.timezone.utc)
    info = {"url": f"http://{host}:{port}", "token": secrets.token_urlsafe(32), "pid": os.getpid(),
            "db": url_db, "model": comp.lm.name, "started": started.isoformat()}
    worker = Worker(comp, max_queue=args.queue, max_new_tokens=args.max_new_tokens)
    public = {"url": info["url"], "pid": info["pid"], "db": shown_url(url_db), "model": comp.lm.name,
              "started": info["started"], "keep_alive": args.keep_alive, "started_ts": started.timestamp()}
    api = Api(comp, worker, info["token"], info=public, max_body=args.max_body)
    server = None

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        task = asyncio.create_task(_idle_watch(worker, args.keep_alive, lambda: server))
        yield
        task.cancel()

    server = uvicorn.Server(uvicorn.Config(build_app(api, cors=args.cors, lifespan=lifespan), log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=10, lifespan="on"))
    server_file.write(info)
    print(f"companion serve: {info['url']} (pid {info['pid']}), model {comp.lm.name}, keep-alive "
          f"{'never' if args.keep_alive < 0 else f'{args.keep_alive:g} s'}; `companion serve --stop` ends it",
          flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        # uvicorn handles these, then re-raises the one it caught once it has shut down: with the
        # default handlers that would kill the process before server.json is removed.
        signal.signal(sig, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        worker.stop(grace=30)
        server_file.remove_if(os.getpid())
        comp.close()
    return 0


async def _idle_watch(worker, keep_alive: float, server) -> None:
    if keep_alive < 0:
        return
    while True:
        await asyncio.sleep(min(1.0, max(keep_alive / 4, 0.05)))
        if not worker.busy() and time.monotonic() - worker.last_active >= keep_alive:
            print(f"companion serve: idle for {keep_alive:g} s; exiting", file=sys.stderr, flush=True)
            server().should_exit = True
            return
