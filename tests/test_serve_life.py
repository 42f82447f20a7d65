"""A server's life: restart and resume, kill -9 mid-turn, `companion ps`, `serve --stop`, --keep-alive."""

from __future__ import annotations

import os
import signal
import socket

import httpx
import pytest
from serving import Server, companion, save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory):
    return save_tiny_model(tokenizer, tmp_path_factory.mktemp("tiny-model"))


def test_kill_9_mid_turn_loses_no_complete_turn_and_a_restart_resumes(model_dir, tmp_path):
    home = tmp_path / "home"
    srv = Server(home, model_dir, "--keep-alive", "-1")
    try:
        for text in ("My cat is Miso.", "I live in Kyoto."):
            assert srv.chat("life", text, max_tokens=4)[0] == 200
        srv.chat("other", "Another session.", max_tokens=4)
        with httpx.Client(timeout=60) as http:
            with http.stream("POST", srv.url + "/v1/chat/completions",
                             headers={"Authorization": f"Bearer {srv.token}", "X-Companion-Session": "life"},
                             json={"model": "tiny", "stream": True, "max_tokens": 900,
                                   "messages": [{"role": "user", "content": "Talk for a long time."}]}) as resp:
                lines = resp.iter_lines()
                for _ in range(6):
                    next(lines)
                os.kill(srv.proc.pid, signal.SIGKILL)
                srv.proc.wait(30)
    finally:
        srv.stop()
    assert (home / "server.json").exists()  # left by the killed server: stale, and seen to be so
    assert companion(home, "ps").stdout.strip() == "no server"
    again = Server(home, model_dir, "--keep-alive", "-1")
    try:
        assert [t["user"] for t in again.turns("life")] == ["My cat is Miso.", "I live in Kyoto."]
        status, body, _ = again.chat("life", "Where do I live?", max_tokens=4)
        assert status == 200 and body["companion"]["cycle"] == 3
        assert body["usage"]["prompt_tokens"] > 32 - 1  # the stored engram went into the prompt
        assert again.chat("other", "Still here?", max_tokens=4)[1]["companion"]["cycle"] == 2
    finally:
        again.stop()


def test_ps_and_stop(model_dir, tmp_path):
    home = tmp_path / "home"
    srv = Server(home, model_dir, "--keep-alive", "-1")
    try:
        no_cors = httpx.options(srv.url + "/v1/models", headers={"Origin": "http://ok.example",
                                                                  "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in no_cors.headers  # none without --cors
        ps = companion(home, "ps")
        assert ps.returncode == 0 and srv.url in ps.stdout and "no turns in flight" in ps.stdout
        busy = companion(home, "serve", "--model", str(model_dir))
        assert busy.returncode == 1 and "already running" in busy.stderr
        with httpx.Client(timeout=60) as http:
            with http.stream("POST", srv.url + "/v1/chat/completions",
                             headers={"Authorization": f"Bearer {srv.token}", "X-Companion-Session": "inflight"},
                             json={"model": "tiny", "stream": True, "max_tokens": 900,
                                   "messages": [{"role": "user", "content": "Talk for a long time."}]}) as resp:
                lines = resp.iter_lines()  # kept: a dropped iterator closes the stream
                next(lines)
                shown = companion(home, "ps").stdout
        assert "inflight" in shown and "running" in shown
        srv.idle()
        stop = companion(home, "serve", "--stop")
        assert stop.returncode == 0 and f"stopped the server at {srv.url}" in stop.stdout
        assert srv.proc.wait(30) == 0 and not (home / "server.json").exists()
        assert companion(home, "ps").stdout.strip() == "no server"
        assert companion(home, "serve", "--stop").stdout.strip() == "no server"
    finally:
        srv.stop()


def test_keep_alive_exits_when_idle_and_a_stale_file_is_not_signalled(model_dir, tmp_path):
    home = tmp_path / "home"
    srv = Server(home, model_dir, "--keep-alive", "1")
    try:
        assert srv.proc.wait(60) == 0
        assert not (home / "server.json").exists()
    finally:
        srv.stop()
    # a server.json naming a live process that is not a server (this test): --stop must not signal it
    (home / "server.json").write_text(f'{{"url": "http://127.0.0.1:9", "token": "x", "pid": {os.getpid()}}}')
    stop = companion(home, "serve", "--stop")
    assert stop.returncode == 0 and "stale" in stop.stdout and not (home / "server.json").exists()


def test_bad_options_and_a_taken_port_are_one_line(model_dir, tmp_path):
    bad = companion(tmp_path / "h", "serve", "--model", str(model_dir), "--keep-alive", "abc")
    assert bad.returncode == 2 and "keep-alive" in bad.stderr
    help_text = " ".join(companion(tmp_path / "h", "serve", "--help").stdout.split())
    assert "always required" in help_text and "127.0.0.1" in help_text
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        res = companion(tmp_path / "h", "serve", "--model", str(model_dir), "--port", str(taken.getsockname()[1]))
    assert res.returncode == 1 and "cannot listen on 127.0.0.1" in res.stderr and len(res.stderr.splitlines()) == 1
