"""LoCoMo results: per-mode-row, per-category means (F1 and the gold answer's NLL), results.json, markdown
tables and a bar chart."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from .data import CATEGORIES, TUNE_CONVERSATIONS

SPLIT_NOTE = (f"The recipe and prompts are never tuned on reported questions: {', '.join(TUNE_CONVERSATIONS)} is the "
              "designated tuning conversation ('tune' split); every other conversation is the 'report' split, "
              "the headline. Questions are sampled per conversation, balanced across categories, with the seed.")


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def _ci95(xs):
    if len(xs) < 2:
        return None
    m = _mean(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return 1.959964 * sd / math.sqrt(len(xs))


NLL_NOTE = ("NLL: teacher-forced -log p of the gold answer's tokens (str(answer)), nats per token, after the row's "
            "exact question prompt, averaged over questions; category 5 (adversarial) has no gold answer in the "
            "answer field and is left out.")


def summarize(answers: list[dict], modes: list[str]) -> dict:
    """mode row -> category -> mean F1 and mean answer NLL (and 'overall' over categories 1-4), plus decline
    rates, tokens, seconds."""
    out = {k: {} for k in ("f1", "f1_ci95", "nll", "nll_ci95", "adversarial", "prompt_tokens", "seconds",
                           "token_ratio", "n")}
    for mode in modes:
        rows = [a for a in answers if a["mode"] == mode]
        if not rows:
            continue
        scored = [a for a in rows if a["category"] != 5]
        f1 = {str(c): _mean([a["f1"] for a in scored if a["category"] == c]) for c in (1, 2, 3, 4)}
        f1["overall"] = _mean([a["f1"] for a in scored])
        out["f1"][mode] = f1
        out["f1_ci95"][mode] = _ci95([a["f1"] for a in scored])
        measured = [a for a in scored if a.get("nll") is not None]
        nll = {str(c): _mean([a["nll"] for a in measured if a["category"] == c]) for c in (1, 2, 3, 4)}
        nll["overall"] = _mean([a["nll"] for a in measured])
        nll["n"] = len(measured)
        out["nll"][mode] = nll
        out["nll_ci95"][mode] = _ci95([a["nll"] for a in measured])
        adv = [a for a in rows if a["category"] == 5]
        out["adversarial"][mode] = _mean([float(a["declined"]) for a in adv])
        out["prompt_tokens"][mode] = _mean([a["prompt_tokens"] for a in rows])
        out["seconds"][mode] = _mean([a["seconds"] for a in rows])
        out["token_ratio"][mode] = _mean([a["token_ratio"] for a in rows])
        out["n"][mode] = {"questions": len(rows), **{str(c): sum(a["category"] == c for a in rows) for c in CATEGORIES}}
    return out


def code_version(repo: Path) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "companion", "scripts"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fmt(x, spec=".3f"):
    return "–" if x is None else format(x, spec)


def table(summary: dict, modes: list[str]) -> str:
    head = ("| mode | " + " | ".join(f"{CATEGORIES[c]} F1" for c in (1, 2, 3, 4)) +
            " | overall F1 (±95%) | adversarial declines | tokens/question | tokens / full transcript | s/question | n |")
    lines = [head, "|" + " --- |" * 11]
    for mode in modes:
        if mode not in summary["f1"]:
            continue
        f = summary["f1"][mode]
        ci = summary["f1_ci95"][mode]
        n = summary["n"][mode]
        lines.append(f"| {mode} | " + " | ".join(_fmt(f[str(c)]) for c in (1, 2, 3, 4)) +
                     f" | {_fmt(f['overall'])} ± {_fmt(ci)} | {_fmt(summary['adversarial'][mode], '.0%')}"
                     f" | {_fmt(summary['prompt_tokens'][mode], '.0f')} | {_fmt(summary['token_ratio'][mode], '.3f')}"
                     f" | {_fmt(summary['seconds'][mode], '.2f')} | {n['questions']} |")
    return "\n".join(lines)


def nll_table(summary: dict, modes: list[str]) -> str:
    """Mean gold-answer NLL per mode row and category (lower is better)."""
    lines = ["| mode | " + " | ".join(f"{CATEGORIES[c]} NLL" for c in (1, 2, 3, 4)) + " | overall NLL (±95%) | n |",
             "|" + " --- |" * 7]
    for mode in modes:
        f = summary.get("nll", {}).get(mode)
        if not f or f["overall"] is None:
            continue
        lines.append(f"| {mode} | " + " | ".join(_fmt(f[str(c)]) for c in (1, 2, 3, 4)) +
                     f" | {_fmt(f['overall'])} ± {_fmt(summary['nll_ci95'][mode])} | {f['n']} |")
    return "\n".join(lines)


def chart(summary: dict, modes: list[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in modes if m in summary["f1"]]
    groups = [("1", "multi-hop"), ("2", "temporal"), ("3", "open-domain"), ("4", "single-hop"), ("overall", "overall")]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        vals = [summary["f1"][mode][k] or 0.0 for k, _ in groups]
        ax.bar([g + i * width for g in range(len(groups))], vals, width, label=mode)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], [label for _, label in groups])
    ax.set_ylabel("token F1")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, state, settings, engines, modes: list[str] | None = None, *, command: str = "",
          repo: Path | None = None) -> dict:
    """results.json, locomo.md and locomo.png in out; returns the results dict. engines: an Engine or one per
    recipe (as given to evaluate.run); modes: the rows to report (default: the rows the run asked)."""
    from ..modes import engines_by_recipe

    engines = engines_by_recipe(engines)
    lm = next(iter(engines.values())).lm
    modes = list(state.rows) if modes is None else modes
    splits = {"report": [a for a in state.answers if a["split"] == "report"],
              "tune": [a for a in state.answers if a["split"] == "tune"], "all": state.answers}
    sums = {k: summarize(v, modes) for k, v in splits.items() if v}
    head = "report" if "report" in sums else next(iter(sums), None)
    results = {"model": lm.name, "fingerprint": lm.fingerprint, "recipes": list(engines),
               "recipe_configs": {r: e.config.to_dict() for r, e in engines.items()}, "seed": settings.seed, "settings": {**settings.fixed(), "limit": settings.limit, "modes": modes},
               "code_version": getattr(state, "code_version", None) or code_version(repo or Path.cwd()), "command": command, "split_note": SPLIT_NOTE,
               "nll_note": NLL_NOTE,
               "headline_split": head, **(sums.get(head) or {}), "splits": sums, "replays": state.replays,
               "transcript_tokens": state.transcript_tokens, "skipped_modes": state.skipped,
               "answers": state.answers}
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    convs = {s: sorted({a["conv"] for a in v}) for s, v in splits.items()}
    recipes = "; ".join(f"`{e.config.to_json()}`" for e in engines.values())
    md = [f"# LoCoMo, {lm.name}", "", f"Recipes: {recipes}; seed {settings.seed}; "
          f"{settings.limit} questions per conversation; text modes bounded to {settings.context_chars} characters; "
          f"replies up to {settings.max_new_tokens} tokens; code {results['code_version']}.", "", SPLIT_NOTE, "",
          "Rows engram:<recipe>, foreign:<recipe> and engram+retrieval:<recipe> read that recipe's engram; "
          "none, transcript, recent and retrieval hold no engram and are asked once.", ""]
    if command:
        md += ["```", command, "```", ""]
    for split in ("report", "tune", "all"):
        if split in sums:
            md += [f"## {split} split ({', '.join(convs[split])})", "", table(sums[split], modes), "",
                   "Gold-answer NLL (lower is better):", "", nll_table(sums[split], modes), ""]
    md += [NLL_NOTE, ""]
    if state.skipped:
        md += ["Skipped modes: " + "; ".join(f"{m}: {why}" for m, why in state.skipped.items()), ""]
    (out / "locomo.md").write_text("\n".join(md), encoding="utf-8")
    if head:
        chart(sums[head], modes, out / "locomo.png", f"LoCoMo token F1, {lm.name}, {head} split "
              f"({', '.join(convs[head])})")
    return results
