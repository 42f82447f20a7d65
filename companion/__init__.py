"""Companion: a chat agent whose memory is a rolling engram of hidden states."""

from .config import ConfigError, EngramConfig
from .cycle import Engine, InputTooLongError, TurnResult
from .loading import LanguageModel, ModelLoadError, load_model
from .service import Companion, CompanionError, TurnReport

__all__ = [
    "Companion", "CompanionError", "ConfigError", "EngramConfig", "Engine", "InputTooLongError",
    "LanguageModel", "ModelLoadError", "TurnReport", "TurnResult", "load_model",
]
