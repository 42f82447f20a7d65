"""The one thread that runs turns: the model is not thread-safe, so every turn of every session
goes through one FIFO queue, which also keeps the turns of one session in the order they came.

The queue is bounded: a full one is refused at once (429 with Retry-After) rather
than holding connections open without limit. Each job carries a cancel flag; the
turn's on_text raises KeyboardInterrupt when it is set, which aborts the turn
before anything is stored (Engine.run_turn's contract). Results go back to the
request's event loop as events: ("text", piece), ("done", (report, action)),
("error", exception), ("cancelled", None).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import queue
import threading
import time
from dataclasses import dataclass, field

from .openai_schema import ApiError, TurnOptions
from .reconcile import plan


@dataclass
class Job:
    session: str
    action: str  # "chat" (an OpenAI request: reconciled first), "say", "more" or "retry"
    text: str | None
    options: TurnOptions
    history: list = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None
    events: asyncio.Queue | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"
    pieces: int = 0
    started: float = 0.0
    number: int = 0

    def emit(self, kind: str, payload=None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the request's loop is gone (server shutting down): nobody to tell
            pass


class Worker:
    def __init__(self, comp, *, max_queue: int = 16, max_new_tokens: int = 200):
        self.comp, self.max_new_tokens = comp, max_new_tokens
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.lock = threading.Lock()
        self.in_flight: list[Job] = []
        self.last_active = time.monotonic()
        self.mean_seconds = 5.0  # a guess until turns are measured; only Retry-After uses it
        self._numbers = itertools.count(1)
        self.stopping = False
        self.turns_done = 0  # turns stored through this server (ps, and tests that must know a turn ran here)
        self.thread = threading.Thread(target=self._loop, name="companion-turns", daemon=True)
        self.thread.start()

    # -- submitting -------------------------------------------------------
    def submit(self, job: Job) -> Job:
        job.loop, job.events = asyncio.get_running_loop(), asyncio.Queue()
        job.number = next(self._numbers)
        with self.lock:
            try:
                self.jobs.put_nowait(job)
            except queue.Full:
                wait = max(1, math.ceil(self.mean_seconds * (self.jobs.qsize() + 1)))
                raise ApiError(429, f"the turn queue is full ({self.jobs.maxsize} waiting); try again in "
                                    f"{wait} s", code="queue_full", headers={"Retry-After": str(wait)}) from None
            self.in_flight.append(job)
        return job

    def busy(self) -> bool:
        with self.lock:
            return bool(self.in_flight)

    def snapshot(self) -> list[dict]:
        now = time.monotonic()
        with self.lock:
            return [{"session": j.session, "action": j.action, "state": j.state, "pieces": j.pieces,
                     "seconds": round(now - j.started, 1) if j.started else 0.0} for j in self.in_flight]

    def stop(self, grace: float) -> None:
        """Cancel what waits, give the running turn `grace` seconds to finish, then cancel it."""
        with self.lock:
            for j in self.in_flight:
                if j.state == "queued":
                    j.cancel.set()
        self.stopping = True
        self.thread.join(grace)
        with self.lock:
            for j in self.in_flight:
                j.cancel.set()
        self.thread.join(30)

    # -- the thread -------------------------------------------------------
    def _loop(self) -> None:
        while not self.stopping or not self.jobs.empty():
            try:
                job = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if job.cancel.is_set():
                    job.emit("cancelled")
                    continue
                job.state, job.started = "running", time.monotonic()
                result = self._run(job)
                self.turns_done += 1
                job.emit("done", result)
                took = time.monotonic() - job.started
                self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * took
            except KeyboardInterrupt:
                job.emit("cancelled")
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to its request
                job.emit("error", exc)
            finally:
                with self.lock:
                    self.in_flight.remove(job)
                    self.last_active = time.monotonic()

    def _run(self, job: Job):
        comp, opts = self.comp, job.options

        def on_text(piece: str) -> None:
            if job.cancel.is_set():
                raise KeyboardInterrupt  # aborts the turn: nothing of it is stored
            job.pieces += 1
            job.emit("text", piece)

        # One thread mutates these, and only between turns: the service reads them when a turn starts.
        comp.system, comp.sampling = opts.system, opts.sampling
        comp.max_new_tokens = opts.max_new_tokens or self.max_new_tokens
        action = job.action
        if action == "chat":
            action = plan(comp.store, job.session, job.history, job.text)
        if action == "say":
            report = comp.say(job.session, job.text, on_text=on_text)
        elif action == "more":
            report = comp.more(job.session, on_text=on_text)
        else:
            report = comp.retry(job.session, on_text=on_text)
        return report, action
