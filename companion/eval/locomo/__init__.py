"""LoCoMo evaluation: replay conversations into stored sessions, ask their questions through every memory mode."""

from .data import CATEGORIES, QA, Conversation, default_data_dir, load, split_of, stratified
from .evaluate import RunSettings, RunState, run
from .f1 import declines, locomo_f1, normalize, token_f1
from .replay import Replayed, replay, session_name
from .report import summarize, write

__all__ = ["CATEGORIES", "QA", "Conversation", "Replayed", "RunSettings", "RunState", "declines",
           "default_data_dir", "load", "locomo_f1", "normalize", "replay", "run", "session_name", "split_of",
           "stratified", "summarize", "token_f1", "write"]
