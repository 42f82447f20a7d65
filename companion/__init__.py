"""Companion: a chat agent whose memory is a rolling engram of hidden states."""

from importlib import import_module

# Resolved on first use (PEP 562), so that `companion _sessions`, which shell completion
# runs at every Tab, starts without importing torch.
_WHERE = {
    "Companion": "companion.app.service", "CompanionError": "companion.app.service",
    "TurnReport": "companion.app.service", "ConfigError": "companion.engine.config",
    "EngramConfig": "companion.engine.config", "Engine": "companion.engine.cycle",
    "InputTooLongError": "companion.engine.cycle", "TurnResult": "companion.engine.cycle",
    "LanguageModel": "companion.engine.loading", "ModelLoadError": "companion.engine.loading",
    "load_model": "companion.engine.loading",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'companion' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
