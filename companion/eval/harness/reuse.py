"""Reusing a finished run's rows when only the recipe list changes (`scripts/degradation.py --reuse DIR`).

A trial's text-mode rows (none, transcript, recent, retrieval) depend only on
the settings, the model, the distractors, the text budget and the recipe that
answers them (the first); a recipe's rows (engram:, foreign:, engram+retrieval:<recipe>) and
diagnostics depend on those and its own config only, since no prompt is shared
across recipes. So with everything else identical, those rows are taken from
DIR's trials and only the other recipes live their sessions and are asked.

What is compared is what run.json records (settings, model fingerprint,
distractor source, recipe configs), not the code: a recipe whose writer or
reader changed under the same name and config is reused as it was (results.json
names the source and its code version under "reused").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from ..modes import ENGRAM_KINDS, Row
from .trial import HarnessError, RunSettings

SAME = ("model", "fingerprint", "distractors", "settings", "foreign_session")  # run.json keys that must match exactly


def read_trials(path: Path) -> dict[int, dict]:
    """trial index -> record of a run's trials.jsonl (none if it does not exist)."""
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                t = json.loads(line)
                done[int(t["trial"])] = t
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by an interrupted write: that trial runs again
    return done


@dataclass
class Reuse:
    source: Path
    code_version: str | None
    recipes: list[str]  # recipes whose rows and diagnostics come from the source
    records: dict[int, dict]  # the source's finished trials

    def fresh(self, engines: dict, settings: RunSettings) -> tuple[dict, RunSettings]:
        """The engines and settings of what still runs: the other recipes' engram-kind rows."""
        engines = {r: e for r, e in engines.items() if r not in self.recipes}
        return engines, replace(settings, modes=[k for k in settings.modes if k in ENGRAM_KINDS])

    def merge(self, old: dict, new: dict | None, rows: list[Row], recipes: list[str]) -> dict:
        """One trial's record: the source's rows and diagnostics beside the fresh ones, in report order."""
        probes = []
        for i, po in enumerate(old["probes"]):
            pn = new["probes"][i] if new is not None else {"k": po["k"], "answers": {}, "diagnostics": {}}
            if pn["k"] != po["k"]:
                raise HarnessError(f"reused trial {old['trial']} has checkpoint {po['k']} where {pn['k']} ran")
            fresh = [r for r in recipes if r not in self.recipes]
            probes.append({"k": po["k"],
                           "answers": {r.name: (pn if r.recipe in fresh else po)["answers"][r.name] for r in rows},
                           "diagnostics": {r: (pn if r in fresh else po)["diagnostics"][r] for r in recipes}})
        return {**old, "probes": probes}

    def summary(self) -> dict:
        return {"from": str(self.source), "code_version": self.code_version, "recipes": self.recipes,
                "text_rows": True}


def load_reuse(source: str | Path, identity: dict) -> Reuse:
    """What DIR (a run of the same settings, model and distractors) can give a run of `identity`."""
    source = Path(source)
    try:
        old = json.loads((source / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise HarnessError(f"--reuse {source}: no readable run.json ({exc})") from None
    diffs = [k for k in SAME if old.get(k) != identity.get(k)]
    if diffs:
        raise HarnessError(f"--reuse {source}: that run differs in {', '.join(diffs)}; only a run with the same "
                           "settings, model and distractors can be reused")
    first, configs = identity["recipes"][0], old.get("recipe_configs", {})
    # A text row holds no engram, so only the answering recipe's reader (its name) matters, not its config.
    if not old.get("recipes") or old["recipes"][0] != first:
        raise HarnessError(f"--reuse {source}: its text-mode rows were answered by recipe "
                           f"{(old.get('recipes') or ['?'])[0]!r}; list the same recipe first (now {first!r})")
    recipes = [r for r in identity["recipes"] if r in configs and configs[r] == identity["recipe_configs"][r]]
    version = None
    if (source / "results.json").is_file():
        version = json.loads((source / "results.json").read_text()).get("code_version")
    return Reuse(source, version, recipes, read_trials(source / "trials.jsonl"))
