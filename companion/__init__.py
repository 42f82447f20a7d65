"""Companion: a chat agent whose memory is a rolling engram of hidden states."""

from companion.app.service import Companion, CompanionError, TurnReport
from companion.engine.config import ConfigError, EngramConfig
from companion.engine.cycle import Engine, InputTooLongError, TurnResult
from companion.engine.loading import LanguageModel, ModelLoadError, load_model

__all__ = [
    "Companion", "CompanionError", "ConfigError", "EngramConfig", "Engine", "InputTooLongError",
    "LanguageModel", "ModelLoadError", "TurnReport", "TurnResult", "load_model",
]
