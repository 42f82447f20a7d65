"""Requests and answers in OpenAI's chat-completions shape, checked by hand.

Checked here rather than by a schema library so every refusal is one line in
OpenAI's error shape ({"error": {"message", "type", "param", "code"}}) naming
the field, before anything reaches the model or the store. Unknown fields are
ignored (clients send many); known fields of the wrong type or a feature we
cannot honour (n > 1, stop, tools) are refused rather than silently ignored.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field

from companion.engine.sampling import Sampling
from memory_store import crud
from memory_store.errors import SessionNameError

from .errors import CompanionError
from .inputs import clean_input, clean_system

MAX_TOKENS = 100_000
TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class ApiError(Exception):
    """A refusal with its HTTP status; the message is one line."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.code, self.headers = status, param, code, headers or {}

    def body(self) -> dict:
        return error_body(str(self), self.status, self.param, self.code)


def error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


@dataclass
class TurnOptions:
    """What shapes one turn: the service's system prompt, sampling and reply length."""
    system: str | None = None  # None: the session's own
    sampling: Sampling = field(default_factory=Sampling)
    max_new_tokens: int | None = None  # None: the server's default


@dataclass
class ChatRequest:
    session: str
    text: str  # the newest user message: the turn
    history: list[tuple[str, str]]  # (user, assistant) pairs the client sent before it
    options: TurnOptions
    stream: bool = False
    include_usage: bool = False
    model: str = ""


def _bad(message: str, param: str | None, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _number(body: dict, key: str, *, lo: float, hi: float, whole: bool = False):
    value = body.get(key)
    if value is None:
        return None
    ok = isinstance(value, int) if whole else isinstance(value, (int, float))
    if not ok or isinstance(value, bool):
        raise _bad(f"{key} must be {'an integer' if whole else 'a number'}, not {type(value).__name__}", key,
                   "invalid_type")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise _bad(f"{key} must be between {lo:g} and {hi:g}, not {value}", key)
    return value


def _flag(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"{key} must be true or false, not {type(value).__name__}", key, "invalid_type")
    return value


def options_of(body: dict, *, length_keys=("max_completion_tokens", "max_tokens")) -> TurnOptions:
    """temperature, top_p, seed and the reply length; greedy unless a temperature above 0 is given."""
    temperature = _number(body, "temperature", lo=0, hi=2)
    top_p = _number(body, "top_p", lo=0, hi=1)
    seed = _number(body, "seed", lo=0, hi=2**62 - 1, whole=True)
    length = next((v for v in (_number(body, k, lo=1, hi=MAX_TOKENS, whole=True) for k in length_keys)
                   if v is not None), None)
    try:
        sampling = Sampling(temperature=temperature or 0.0, top_p=1.0 if top_p is None else top_p, seed=seed)
    except ValueError as exc:
        raise _bad(str(exc), "seed" if seed is not None else "top_p") from None
    return TurnOptions(None, sampling, length)


def _text_of(content, where: str) -> str:
    """A message's text: a string, or a list of {"type": "text"} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content):
            raise _bad(f"{where}: only text content parts are supported", where, "unsupported_content")
        return "".join(p["text"] for p in content)
    raise _bad(f"{where}.content must be a string or a list of text parts", where, "invalid_type")


def _norm(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _messages(raw) -> tuple[list[str], list[tuple[str, str]], str]:
    """(system texts, (user, assistant) pairs, newest user text) from a messages list."""
    if not isinstance(raw, list) or not raw:
        raise _bad("messages must be a non-empty list", "messages", "invalid_type" if not isinstance(raw, list)
                   else "invalid_value")
    systems, turns = [], []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _bad(f"{where} must be an object with a string role", where, "invalid_type")
        role = m["role"]
        if role not in ("system", "developer", "user", "assistant"):
            raise _bad(f"{where}: role {role[:40]!r} is not supported (system, user, assistant)", where)
        text = _text_of(m.get("content"), where)
        (systems if role in ("system", "developer") else turns).append((role, text))
    roles = [r for r, _ in turns]
    if not roles or roles != ["user", "assistant"] * (len(roles) // 2) + ["user"]:
        raise _bad("messages must alternate user and assistant and end with a user message", "messages")
    pairs = [(_norm(turns[i][1]), _norm(turns[i + 1][1])) for i in range(0, len(turns) - 1, 2)]
    return [t for _, t in systems], pairs, turns[-1][1]


def session_of(headers, body: dict) -> str:
    """X-Companion-Session, else OpenAI's `user` field, else "default"; validated like a CLI name."""
    name = headers.get("x-companion-session")
    param = "X-Companion-Session"
    if name is None:
        name, param = body.get("user"), "user"
        if name is None:
            return "default"
    try:
        return crud.validate_session_name(name)
    except SessionNameError as exc:
        raise _bad(str(exc), param, "invalid_session_name") from None


def _refuse_unsupported(body: dict) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise _bad("n must be 1: a session has one next turn", "n", "unsupported_value")
    for key in ("stop", "tools", "functions", "logit_bias"):
        if body.get(key):
            raise _bad(f"{key} is not supported by this server", key, "unsupported_parameter")
    if body.get("logprobs"):
        raise _bad("logprobs is not supported by this server", "logprobs", "unsupported_parameter")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise _bad("response_format other than text is not supported", "response_format", "unsupported_parameter")


def parse_chat(body: dict, headers) -> ChatRequest:
    """A chat.completions request -> the turn it asks for; ApiError (400) for anything wrong."""
    model = body.get("model", "")
    if not isinstance(model, str):
        raise _bad("model must be a string", "model", "invalid_type")
    _refuse_unsupported(body)
    systems, history, text = _messages(body.get("messages"))
    options = options_of(body)
    stream = _flag(body, "stream")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise _bad("stream_options must be an object", "stream_options", "invalid_type")
    include_usage = bool(so and so.get("include_usage") is True)
    session = session_of(headers, body)
    try:
        text = clean_input(text)
        options.system = clean_system("\n\n".join(systems)) if systems else None
    except CompanionError as exc:
        raise _bad(str(exc), "messages") from None
    return ChatRequest(session, text, history, options, stream, include_usage, model)


def parse_turn(body: dict) -> tuple[str, str | None, TurnOptions]:
    """The native turn request of `companion say`/`chat` through a server: (action, text, options)."""
    action = body.get("action", "say")
    if action not in ("say", "more", "retry"):
        raise _bad("action must be say, more or retry", "action")
    text = body.get("text")
    if action == "say":
        if not isinstance(text, str):
            raise _bad("text must be a string", "text", "invalid_type")
        try:
            text = clean_input(text)
        except CompanionError as exc:
            raise _bad(str(exc), "text") from None
    elif text is not None:
        raise _bad(f"{action} takes no text", "text")
    options = options_of(body, length_keys=("max_new_tokens",))
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise _bad("system must be a string", "system", "invalid_type")
    try:
        options.system = clean_system(system)
    except CompanionError as exc:
        raise _bad(str(exc), "system") from None
    return action, text, options


def completion(model: str, report, session: str) -> dict:
    """A chat.completion object for a finished turn."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": report.reply},
                                         "finish_reason": "length" if report.cut else "stop", "logprobs": None}],
            "usage": usage(report), "companion": {"session": session, **report_dict(report)}}


def usage(report) -> dict:
    """The prompt tokens the turn really used (engram slots + this input), not a transcript's."""
    return {"prompt_tokens": report.prompt_tokens, "completion_tokens": report.reply_tokens,
            "total_tokens": report.prompt_tokens + report.reply_tokens}


def report_dict(report) -> dict:
    return {**report.__dict__, "recalled": list(report.recalled)}


def chunk(cid: str, created: int, model: str, delta: dict, finish: str | None = None, **extra) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
