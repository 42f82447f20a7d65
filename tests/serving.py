"""Helpers for the tests of `companion serve`: a tiny saved model, real server processes, plain HTTP.

The model is a random 18-block Llama (hidden size 64) with the real tokenizer,
saved to a folder so the server loads it with --model like any local model:
deep enough for the default layer-16 recipe, small enough to answer in
milliseconds. Everything is written under the test's tmp folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def save_tiny_model(tokenizer, folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=18,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def env_for(home: Path) -> dict:
    env = {**os.environ, "COMPANION_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    for key in ("COMPANION_DB", "COMPANION_CRASH_AT"):
        env.pop(key, None)
    return env


def companion(home: Path, *args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "companion", *args], env=env_for(home), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kw)


class Server:
    """A `companion serve` subprocess on 127.0.0.1, port 0; info is its server.json."""

    def __init__(self, home: Path, model: Path, *args: str, db: str | None = None):
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.log = open(home / f"serve-{time.time_ns()}.log", "w")
        pre = ["--db", db] if db else []
        self.proc = subprocess.Popen([sys.executable, "-m", "companion", *pre, "serve", "--model", str(model),
                                      "--port", "0", *args], env=env_for(home), cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = self._info()
            if info is not None and info.get("pid") == self.proc.pid:
                self.info = info
                self.url, self.token = info["url"], info["token"]
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not start: {Path(self.log.name).read_text()[-2000:]}")

    def _info(self):
        try:
            return json.loads((self.home / "server.json").read_text())
        except (OSError, ValueError):
            return None

    def request(self, method: str, path: str, body=None, *, headers=None, raw: bytes | None = None,
                token: str | None = "", timeout: float = 120):
        """(status, parsed JSON or text, headers); token "" means the server's own, None sends none."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token or self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, text, rh = resp.status, resp.read().decode(), resp.headers
        except urllib.error.HTTPError as exc:
            status, text, rh = exc.code, exc.read().decode(), exc.headers
        try:
            return status, json.loads(text), rh
        except ValueError:
            return status, text, rh

    def chat(self, session: str, text: str, *, history=(), **options):
        messages = [m for u, a in history for m in ({"role": "user", "content": u},
                                                     {"role": "assistant", "content": a})]
        body = {"model": "tiny", "messages": [*messages, {"role": "user", "content": text}], **options}
        return self.request("POST", "/v1/chat/completions", body, headers={"X-Companion-Session": session})

    def turns(self, session: str) -> list[dict]:
        status, shown, _ = self.request("GET", f"/api/sessions/{session}")
        return shown["turns"] if status == 200 else []

    def idle(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.request("GET", "/api/server")[1]
            if not status["in_flight"]:
                return status
            time.sleep(0.05)
        raise AssertionError("the server stayed busy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def digest(db: Path) -> str:
    """Every row of the sessions and turns tables, hashed: equal digests mean nothing was stored."""
    conn = sqlite3.connect(db)
    try:
        rows = [conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("sessions", "turns")]
    finally:
        conn.close()
    return hashlib.sha256(repr(rows).encode()).hexdigest()
