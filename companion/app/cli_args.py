"""Option types for the CLI, and the options that shape replies (--system, sampling, --recall).

Each type refuses a bad value with one line (argparse adds the usage), so
`--temperature -1` or `--recall 10000` never reach the model.
"""

from __future__ import annotations

import argparse
import math

from companion.engine.sampling import Sampling

from .recall import MAX_RECALL

# What an option means when neither a flag nor config.toml gives it (the others default to None).
BUILTIN = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 200}


def count_arg(text: str) -> int:
    """argparse type for --max-new-tokens: a whole number from 1 to 100000."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"{value} is out of range (1..100000)")
    return value


def recipe_arg(text: str) -> str:
    """argparse type for --recipe: a registered recipe name."""
    from companion.engine.recipes import recipe_names

    if text not in recipe_names():
        raise argparse.ArgumentTypeError(f"unknown recipe {text!r}; choose one of {', '.join(recipe_names())} "
                                         "(`companion recipes` describes them)")
    return text


def _number(text: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'number' if kind is float else 'whole number'}") \
            from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def temperature_arg(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} is below 0 (0 is greedy, above 0 samples)")
    return value


def top_p_arg(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range (above 0, at most 1)")
    return value


def seed_arg(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value < 2**62:
        raise argparse.ArgumentTypeError(f"{value} is out of range (0..2**62)")
    return value


def recall_arg(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= MAX_RECALL:
        raise argparse.ArgumentTypeError(f"{value} is out of range (0..{MAX_RECALL} stored turns)")
    return value


def turn_arg(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0 (0 forks before the first turn)")
    return value


def shaping_opts(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--system", default=None, metavar="TEXT",
                    help="system prompt: stored with a new session; on an existing one it applies from the next "
                         "turn on (recorded as of that turn); '' clears it")
    # None, not the built-in value: config.toml (config_file.settle) may fill what no flag gave.
    sp.add_argument("--temperature", type=temperature_arg, default=None,
                    help="sample with this temperature (default 0: greedy)")
    sp.add_argument("--top-p", type=top_p_arg, default=None, help="nucleus sampling mass, with --temperature")
    sp.add_argument("--seed", type=seed_arg, default=None,
                    help="make sampling reproducible (turn N draws with seed + N), with --temperature")
    sp.add_argument("--recall", type=recall_arg, default=None, metavar="K",
                    help=f"put the K stored turns that best match each input (BM25) in front of it, 0..{MAX_RECALL}; "
                         "stored with the session (default: the session's own, 0 for a new one)")


def sampling_of(args) -> Sampling:
    """The Sampling the options ask for; a --top-p or --seed without --temperature is refused (ValueError)."""
    def given(key):
        value = getattr(args, key, None)
        return BUILTIN[key] if value is None else value

    return Sampling(temperature=given("temperature"), top_p=given("top_p"), seed=getattr(args, "seed", None))


def forget_request(arg: str) -> tuple[str | None, int | None]:
    """/forget's argument: (text, None), or (None, N) for `--turn N`; a bad one is one ValueError line.

    >>> forget_request("Vornelk"), forget_request("--turn 3")
    (('Vornelk', None), (None, 3))
    """
    parts = arg.split()
    if not parts:
        raise ValueError("forget what? /forget WORDS, or /forget --turn N")
    if parts[0] != "--turn":
        return arg.strip(), None
    if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError("/forget --turn takes one turn number (1 or more)")
    return None, int(parts[1])
