"""config.toml in the data folder: the defaults of `chat` and `say`, under the command line.

    model = "HuggingFaceTB/SmolLM2-360M-Instruct"
    recipe = "seed"        # the recipe of a NEW session; an existing one keeps its own
    temperature = 0.7      # top_p and seed apply whenever the temperature in force is above 0
    top_p = 0.9
    seed = 7
    recall = 3
    max_new_tokens = 400
    system = "Answer briefly."

A flag beats the file, the file beats the built-in default; no file changes
nothing. Values pass the same checks as the flags (cli_args), and a bad file is
refused whole, in one line naming the file, the key and why.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from . import cli_args

# key -> (TOML types accepted, what to call them, the flag's check); numbers go through the
# flag's own type function as text so the file and the command line share one set of rules.
_NUMBER, _WHOLE, _TEXT = (int, float), (int,), (str,)


def _text(value: str) -> str:
    return value


def _model(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty (leave the key out for the embedded model)")
    return value


KEYS = {
    "model": (_TEXT, "a string", _model),
    "recipe": (_TEXT, "a string", cli_args.recipe_arg),
    "temperature": (_NUMBER, "a number", cli_args.temperature_arg),
    "top_p": (_NUMBER, "a number", cli_args.top_p_arg),
    "seed": (_WHOLE, "a whole number", cli_args.seed_arg),
    "recall": (_WHOLE, "a whole number", cli_args.recall_arg),
    "max_new_tokens": (_WHOLE, "a whole number", cli_args.count_arg),
    "system": (_TEXT, "a string", _text),
}
_SAMPLING_ONLY = ("top_p", "seed")


class ConfigFileError(ValueError):
    """A config file that cannot be used; the message is one line: file, key, why."""


def _toml_type(value) -> str:
    return {bool: "a boolean", str: "a string", int: "a whole number", float: "a number",
            dict: "a table", list: "an array"}.get(type(value), type(value).__name__)


def check(table: dict, where: str = "config.toml") -> dict:
    """The table's values checked like the flags; ConfigFileError names the first bad key.

    >>> check({"temperature": 0.7, "seed": 7, "model": "m"})
    {'temperature': 0.7, 'seed': 7, 'model': 'm'}
    >>> check({"temprature": 1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    companion.app.config_file.ConfigFileError: config.toml: unknown key 'temprature' (known: model, recipe, ...)
    >>> check({"recall": "3"})
    Traceback (most recent call last):
    ...
    companion.app.config_file.ConfigFileError: config.toml: recall: must be a whole number, not a string
    >>> check({"top_p": 1.5}, "c.toml")
    Traceback (most recent call last):
    ...
    companion.app.config_file.ConfigFileError: c.toml: top_p: 1.5 is out of range (above 0, at most 1)
    """
    out = {}
    for key, value in table.items():
        if key not in KEYS:
            raise ConfigFileError(f"{where}: unknown key {key!r} (known: {', '.join(KEYS)})")
        types, what, flag_check = KEYS[key]
        # bool is an int to Python, but `seed = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, types):
            raise ConfigFileError(f"{where}: {key}: must be {what}, not {_toml_type(value)}")
        try:
            out[key] = flag_check(value if isinstance(value, str) else repr(value))
        except argparse.ArgumentTypeError as exc:
            raise ConfigFileError(f"{where}: {key}: {exc}") from None
    return out


def parse(text: str, where: str = "config.toml") -> dict:
    """TOML text to checked values; a syntax error keeps tomllib's line and column.

    >>> parse('temperature = 0.5\\nmax_new_tokens = 64\\n')
    {'temperature': 0.5, 'max_new_tokens': 64}
    >>> parse('temperature = \\n')
    Traceback (most recent call last):
    ...
    companion.app.config_file.ConfigFileError: config.toml: not valid TOML: Invalid value (at line 1, column 15)
    """
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{where}: not valid TOML: {' '.join(str(exc).split())}") from None
    return check(table, where)


def load(path: Path) -> dict:
    """The checked values of the file at path; {} when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    return parse(text, str(path))


def merged(flags: dict, file: dict, builtin: dict) -> dict:
    """Flag over file over built-in, per key; None in flags means "not given".

    The file's top_p and seed only apply while the temperature in force samples, so a
    `--temperature 0` on the command line turns sampling off rather than being refused.

    >>> merged({"temperature": None, "recall": 2}, {"temperature": 0.7, "recall": 5}, {"temperature": 0.0})
    {'temperature': 0.7, 'recall': 2}
    >>> merged({"temperature": 0.0, "top_p": None}, {"temperature": 0.7, "top_p": 0.9}, {"top_p": 1.0})
    {'temperature': 0.0, 'top_p': 1.0}
    >>> merged({"temperature": 0.5, "top_p": None}, {"top_p": 0.9}, {"top_p": 1.0})
    {'temperature': 0.5, 'top_p': 0.9}
    """
    out = {}
    for key, flag in flags.items():
        out[key] = flag if flag is not None else file.get(key, builtin.get(key))
    if not out.get("temperature") and "temperature" in out:
        for key in _SAMPLING_ONLY:
            if key in out and flags.get(key) is None:
                out[key] = builtin.get(key)
    return out


def settle(args: argparse.Namespace, file: dict) -> None:
    """Fill the options of chat and say that no flag gave, from the file, then the built-ins.

    The file's recipe goes to args.new_recipe, not args.recipe: a --recipe must match an
    existing session, while the file only chooses the recipe of sessions made from now on.
    """
    keys = [k for k in KEYS if k != "recipe" and hasattr(args, k)]
    for key, value in merged({k: getattr(args, k) for k in keys}, file, cli_args.BUILTIN).items():
        setattr(args, key, value)
    args.new_recipe = file.get("recipe")
