"""`companion serve`'s HTTP side: OpenAI's chat completions plus a native /api for sessions.

Why Starlette on uvicorn: the same ASGI stack FastAPI stands on (so the field's
usual choice, kept and widely deployed), with streaming responses that notice a
client going away, but without FastAPI's automatic validation, whose 422 bodies
are not OpenAI's error shape; requests here are checked by hand
(companion.app.openai_schema) so every refusal is one OpenAI-style line.

Every route needs `Authorization: Bearer <token>` (the token in server.json);
bodies are bounded; nothing a request does reaches the store unless its turn
finished. Handlers never put a traceback in a response: an unexpected failure is
logged on the server's stderr and answered as a one-line 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from companion.engine.config import ConfigError
from companion.engine.cycle import InputTooLongError
from memory_store.errors import StaleSessionError, StoreError

from . import openai_schema as S
from .errors import CompanionError
from .fork import fork
from .openai_schema import ApiError
from .worker import Job

log = logging.getLogger("companion.serve")
POLL = 0.25  # seconds between checks that a waiting client is still there


class ClientGone(Exception):
    pass


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def as_api_error(exc: BaseException) -> ApiError:
    """A failure from the service or the store -> its status and one line."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputTooLongError):
        return ApiError(400, text, param="messages", code="context_length_exceeded")
    if isinstance(exc, CompanionError):
        if isinstance(exc.__cause__, StaleSessionError) or "moved on in another process" in text:
            return ApiError(409, text, code="session_moved_on")
        if text.startswith("no session named") or text.startswith("nothing to"):
            return ApiError(404, text, code="session_not_found")
        return ApiError(409, text, code="session_conflict")
    if isinstance(exc, (StoreError, ConfigError, ValueError)):
        return ApiError(400, text)
    log.error("unexpected failure", exc_info=exc)
    return ApiError(500, f"internal error ({type(exc).__name__}); the server's log has the details")


class Api:
    def __init__(self, comp, worker, token: str, *, info: dict, max_body: int = 1 << 20):
        self.comp, self.worker, self.token, self.info, self.max_body = comp, worker, token, info, max_body

    # -- plumbing ---------------------------------------------------------
    def guarded(self, handler):
        async def route(request: Request):
            try:
                self._auth(request)
                self.worker.last_active = time.monotonic()
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - never a traceback in a response
                return error_response(as_api_error(exc))
        return route

    def _auth(self, request: Request) -> None:
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), self.token.encode()):
            raise ApiError(401, "missing or wrong bearer token (server.json in the data folder holds it)",
                           code="invalid_api_key")

    async def body(self, request: Request) -> dict:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            raise ApiError(413, f"request body over {self.max_body} bytes", code="request_too_large")
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > self.max_body:
                raise ApiError(413, f"request body over {self.max_body} bytes", code="request_too_large")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_json")
        return body

    async def next_event(self, job: Job, request: Request):
        while True:
            try:
                return await asyncio.wait_for(job.events.get(), POLL)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancel.set()
                    raise ClientGone from None

    async def first(self, job: Job, request: Request):
        """Wait for the turn's first event; refusals before any text become a plain 4xx answer."""
        try:
            event = await self.next_event(job, request)
        except ClientGone:
            return None
        if event[0] == "error":
            raise event[1]
        if event[0] == "cancelled":
            raise ApiError(503, "the turn was cancelled (the server is stopping)", code="cancelled")
        return event

    # -- OpenAI -------------------------------------------------------------
    async def models(self, request: Request):
        lm = self.comp.lm
        return JSONResponse({"object": "list", "data": [{"id": lm.name, "object": "model",
                                                         "created": int(self.info["started_ts"]),
                                                         "owned_by": "companion"}]})

    async def chat(self, request: Request):
        req = S.parse_chat(await self.body(request), request.headers)
        job = self.worker.submit(Job(req.session, "chat", req.text, req.options, req.history))
        model = req.model or self.comp.lm.name
        event = await self.first(job, request)
        if event is None:
            return JSONResponse({}, status_code=499)
        if not req.stream:
            while event[0] == "text":
                try:
                    event = await self.next_event(job, request)
                except ClientGone:
                    return JSONResponse({}, status_code=499)
            if event[0] != "done":
                raise event[1] if event[0] == "error" else ApiError(503, "the turn was cancelled", code="cancelled")
            return JSONResponse(S.completion(model, event[1][0], req.session))
        return StreamingResponse(self._chunks(job, request, event, model, req), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def _chunks(self, job: Job, request: Request, event, model: str, req: S.ChatRequest):
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        finished = False
        try:
            yield _sse(S.chunk(cid, created, model, {"role": "assistant", "content": ""}))
            while True:
                kind, payload = event
                if kind == "text":
                    yield _sse(S.chunk(cid, created, model, {"content": payload}))
                elif kind == "done":
                    report = payload[0]
                    yield _sse(S.chunk(cid, created, model, {}, "length" if report.cut else "stop",
                                       companion={"session": req.session, **S.report_dict(report)}))
                    if req.include_usage:
                        yield _sse({**S.chunk(cid, created, model, {}), "choices": [], "usage": S.usage(report)})
                    yield "data: [DONE]\n\n"
                    finished = True
                    return
                else:
                    err = as_api_error(payload) if kind == "error" else ApiError(503, "the turn was cancelled",
                                                                                code="cancelled")
                    yield _sse(err.body())
                    finished = True
                    return
                event = await self.next_event(job, request)
        except ClientGone:
            return
        finally:
            if not finished:  # the client went away mid-reply: the turn is dropped whole
                job.cancel.set()

    # -- native ----------------------------------------------------------------
    async def turn(self, request: Request):
        """POST /api/sessions/{name}/turn: say/more/retry for `companion say` and `chat`, streamed as SSE."""
        name = _name(request)
        action, text, options = S.parse_turn(await self.body(request))
        job = self.worker.submit(Job(name, action, text, options))
        event = await self.first(job, request)
        if event is None:
            return JSONResponse({}, status_code=499)

        async def events():
            nonlocal event
            finished = False
            try:
                while True:
                    kind, payload = event
                    if kind == "text":
                        yield _sse({"text": payload})
                    else:
                        finished = True
                        yield _sse({"report": S.report_dict(payload[0]), "action": payload[1]} if kind == "done"
                                   else as_api_error(payload).body() if kind == "error"
                                   else S.error_body("the turn was cancelled", 503, code="cancelled"))
                        return
                    event = await self.next_event(job, request)
            except ClientGone:
                return
            finally:
                if not finished:
                    job.cancel.set()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def sessions(self, request: Request):
        rows = await asyncio.to_thread(self.comp.sessions)
        return JSONResponse({"object": "list", "data": [
            {"name": s.name, "turns": s.turns, "model": s.model, "cycle": s.cycle,
             "created": s.created, "last_used": s.last_used} for s in rows]})

    async def show(self, request: Request):
        info, views = await asyncio.to_thread(self.comp.show, _name(request))
        return JSONResponse({**info, "turns": [v.__dict__ for v in views]})

    async def fork(self, request: Request):
        name, body = _name(request), await self.body(request)
        new, at = body.get("new"), body.get("at")
        if not isinstance(new, str):
            raise ApiError(400, "new must be a string: the fork's name", param="new", code="invalid_type")
        if at is not None and (not isinstance(at, int) or isinstance(at, bool) or at < 0):
            raise ApiError(400, "at must be a whole number >= 0", param="at", code="invalid_type")
        try:
            report = await asyncio.to_thread(fork, self.comp.store, name, new, at=at)
        except CompanionError as exc:
            text = str(exc)
            status = 404 if text.startswith("no session") else 409 if "already exists" in text else 400
            raise ApiError(status, text, param="new" if status == 409 else None) from None
        return JSONResponse({"source": report.source, "name": report.name, "at": report.at})

    async def server(self, request: Request):
        idle = time.monotonic() - self.worker.last_active
        return JSONResponse({**{k: v for k, v in self.info.items() if k != "started_ts"},
                             "idle_seconds": round(idle, 1), "turns_done": self.worker.turns_done,
                             "in_flight": self.worker.snapshot()})


def _name(request: Request) -> str:
    from memory_store import crud
    from memory_store.errors import SessionNameError

    try:
        return crud.validate_session_name(request.path_params["name"])
    except SessionNameError as exc:
        raise ApiError(400, str(exc), param="name", code="invalid_session_name") from None


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


async def _http_error(request: Request, exc: HTTPException):
    return JSONResponse(S.error_body(f"{request.method} {request.url.path}: {exc.detail}", exc.status_code),
                        status_code=exc.status_code)


async def _internal(request: Request, exc: Exception):
    log.error("unexpected failure", exc_info=exc)
    return JSONResponse(S.error_body("internal error; the server's log has the details", 500), status_code=500)


def build_app(api: Api, *, cors: list[str] | None = None, lifespan=None) -> Starlette:
    g = api.guarded
    routes = [Route("/v1/models", g(api.models), methods=["GET"]),
              Route("/v1/chat/completions", g(api.chat), methods=["POST"]),
              Route("/api/server", g(api.server), methods=["GET"]),
              Route("/api/sessions", g(api.sessions), methods=["GET"]),
              Route("/api/sessions/{name}", g(api.show), methods=["GET"]),
              Route("/api/sessions/{name}/fork", g(api.fork), methods=["POST"]),
              Route("/api/sessions/{name}/turn", g(api.turn), methods=["POST"])]
    middleware = []
    if cors:
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=cors, allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type", "X-Companion-Session"]))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={HTTPException: _http_error, Exception: _internal})
