"""Training a recipe's writer with the language model frozen (scripts/train_engram.py)."""

from .bank import TurnBank
from .data import TrainingData, build_data
from .episodes import Curriculum, Episode, EpisodeSampler
from .loop import Trainer, answer_losses

__all__ = ["Curriculum", "Episode", "EpisodeSampler", "Trainer", "TrainingData", "TurnBank", "answer_losses",
           "build_data"]
