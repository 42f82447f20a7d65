"""Shared fixtures: a tiny random model for the math, the embedded model for the real path."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from companion.engine.loading import embedded_gguf

    path = embedded_gguf()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="session")
def tiny_lm(tokenizer):
    """A 4-block Llama with random weights and the real tokenizer: fast, deterministic."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from companion.engine.loading import LanguageModel, weights_fingerprint

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    return LanguageModel(model=model, tokenizer=tokenizer, name="tiny-llama", fingerprint=weights_fingerprint(model))


@pytest.fixture(scope="session")
def companion_home(tmp_path_factory):
    """A data folder whose model cache holds the converted embedded model."""
    return tmp_path_factory.mktemp("companion-home")


@pytest.fixture(scope="session")
def embedded_lm(companion_home):
    from companion.engine.loading import load_model

    return load_model(None, cache_root=companion_home / "models", quiet=True)


@pytest.fixture()
def cli_run(tiny_lm, tmp_path, monkeypatch, capsys):
    """companion.app.cli.main on the tiny model with a database under tmp_path: go(*argv) -> (status, stdout, stderr)."""
    import functools

    from companion.app import cli
    from companion.app.service import Companion

    monkeypatch.setenv("COMPANION_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli, "Companion", functools.partial(Companion, lm=tiny_lm, quiet=True))
    url = f"sqlite:///{tmp_path / 'c.db'}"

    def go(*argv: str):
        capsys.readouterr()
        try:
            code = cli.main(["--db", url, *argv])
        except SystemExit as exc:  # argparse
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    go.url = url
    return go


_OPEN_AT_ONCE = """
import sys, time
from memory_store import open_store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
open_store(sys.argv[1]).close()
"""


@pytest.fixture()
def open_at_once():
    """open(url, n): n fresh processes call open_store(url) at the same instant; returns their failures."""

    def run(url: str, n: int) -> list[tuple[int, str]]:
        start = time.time() + 3.0  # every interpreter is up before anyone opens
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, url, repr(start)],
                                  cwd=Path(__file__).resolve().parent.parent,
                                  stderr=subprocess.PIPE, text=True) for _ in range(n)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        return [r for r in results if r[0] != 0]

    return run
