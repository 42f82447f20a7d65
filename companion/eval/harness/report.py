"""The degradation run's human-readable outputs: markdown tables (recall, answer NLL, diagnostics per
recipe) and three plots (recall.png, nll.png, diagnostics.png)."""

from __future__ import annotations

from pathlib import Path

from .verdict import verdict_lines

DIAG_TITLES = {
    "cos_first": "cosine to the turn-1 engram",
    "cos_foreign": "cosine to another session's engram",
    "norm": "mean row norm",
    "effective_rank": "effective rank",
    "pos0_share_turn": "position-0 share of the turn's norm",
    "pos0_share_slot0": "position-0 share of slot 0's norm",
    "fact_slots_held": "slots of the fact's turn still held",
}


def _cell(c: dict) -> str:
    n = c["trials"]
    if n == 0:
        return "–"
    return f"{c['correct']}/{n} {100 * c['correct'] / n:.0f}% [{100 * c['low']:.0f}–{100 * c['high']:.0f}]"


def _nll_cell(c: dict) -> str:
    if not c or c.get("mean") is None:
        return "–"
    if c.get("low") is None:
        return f"{c['mean']:.2f} (n={c['n']})"
    return f"{c['mean']:.2f} [{c['low']:.2f}–{c['high']:.2f}]"


def _header(ks: list[str], first: str) -> list[str]:
    return [f"| {first} | " + " | ".join(f"k={k}" for k in ks) + " |", "| --- | " + " | ".join("---" for _ in ks) + " |"]


def recall_table(results: dict) -> str:
    """Recall by mode row by k: correct/trials, percent, Wilson 95% interval; then the mean answer NLL
    by mode row by k with its 95% interval; then each recipe's engram diagnostics."""
    recall = results["recall"]
    ks = list(next(iter(recall.values())).keys()) if recall else []
    configs = results.get("recipe_configs", {})
    recipes = ", ".join(f"{r} (layer {c.get('layer')}, {c.get('slots')} slots)" for r, c in configs.items())
    warm = results.get("settings", {}).get("warmup")
    told = f" told after {warm} warm-up turns" if warm else ""
    if results.get("settings", {}).get("facts") == "dev":
        told = f" (dev facts: the training templates, not the reported ones){told}"
    lines = [f"Recall of a planted fact{told} after k distractor turns: {results['model']}, "
             f"recipes {recipes}, seed {results['seed']}, {results['trials']} trials, "
             f"code {results['code_version']}.",
             "", "Cells: correct/trials, percent [Wilson 95% interval].", "", *_header(ks, "mode")]
    for mode, by_k in recall.items():
        lines.append(f"| {mode} | " + " | ".join(_cell(by_k[k]) for k in ks) + " |")
    nll = results.get("answer_nll", {})
    if any(c.get("n") for by_k in nll.values() for c in by_k.values()):
        lines += ["", "Teacher-forced NLL of the correct answer (nats per token, lower is better) after the "
                  "mode's exact question prompt. Cells: mean over trials [mean ± 1.96 sd/√n].", "",
                  *_header(ks, "mode")]
        for mode, by_k in nll.items():
            lines.append(f"| {mode} | " + " | ".join(_nll_cell(by_k.get(k, {})) for k in ks) + " |")
    intr = results.get("intrusions", {})
    if any(c["trials"] for by_k in intr.values() for c in by_k.values()):
        lines += ["", "Intrusions: a foreign engram's own answer in the reply to a question about another fact "
                  "(lower is better; the engram speaking where it was not asked; the foreign-transcript row: "
                  "the same with that session's words in front of the question). Cells as for recall.", "",
                  *_header(ks, "row")]
        for mode, by_k in intr.items():
            lines.append(f"| {mode} | " + " | ".join(_cell(by_k[k]) if k in by_k else "–" for k in ks) + " |")
    slots = {r: v for r, v in results.get("fact_slots", {}).items() if v}
    if slots:
        kmax = max(int(k) for k in ks)
        lines += ["", "How long the fact stayed: the slots holding its statement's own tokens (mean over trials), and "
                  f"per trial the k at which the last of them left the engram ('held' = still there at k={kmax}; "
                  "0 = none got in). "
                  "Averaging recipes (seed) rewrite every slot every turn and are left out.", "",
                  "| recipe | slots entered | left at k, per trial | held to the end | none got in |",
                  "| --- | --- | --- | --- | --- |"]
        for r, v in slots.items():
            left = ", ".join("held" if k is None else str(k) for k in v["left_at"])
            lines.append(f"| {r} | {v['entered_mean']:.1f} | {left} | {v['held_to_end']}/{v['trials']} | "
                         f"{v['never_entered']}/{v['trials']} |")
    verdict = verdict_lines(results)
    if verdict:
        lines += ["", *verdict]
    for recipe, diags in results.get("diagnostics", {}).items():
        lines += ["", f"Engram diagnostics, recipe {recipe} (mean ± sd over trials):", "", *_header(ks, "diagnostic")]
        for name, by_k in diags.items():
            cells = [f"{by_k[k]['mean']:.3f} ± {by_k[k]['sd']:.3f}" if k in by_k else "–" for k in ks]
            lines.append(f"| {DIAG_TITLES.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _short(c: dict) -> str:
    n = c["trials"]
    return f"{c['correct']}/{n} [{100 * c['low']:.0f}–{100 * c['high']:.0f}]" if n else "–"


def recipe_table(results: dict, ks: tuple[str, ...] = ("0", "1", "5", "20")) -> str:
    """One line per recipe: recall and answer NLL at the chosen k, and its foreign engram's recall
    (summed over those k) and NLL at the first two; then the text controls. Markdown, for RESULTS.md."""
    recall, nll = results["recall"], results.get("answer_nll", {})
    ks = tuple(k for k in ks if k in next(iter(recall.values()), {}))
    head = ("| recipe | " + " | ".join(f"k={k}" for k in ks) + " | " + " | ".join(f"NLL k={k}" for k in ks)
            + " | foreign: recall; NLL |")
    lines = [head, "|" + " --- |" * (2 * len(ks) + 2)]

    def cells(row: str) -> str:
        return (" | ".join(_short(recall[row][k]) for k in ks) + " | "
                + " | ".join(_nll_cell(nll.get(row, {}).get(k, {})) for k in ks))

    for r in results.get("recipes", []):
        if f"engram:{r}" not in recall:
            continue
        f, fn = recall.get(f"foreign:{r}"), nll.get(f"foreign:{r}", {})
        foreign = "–"
        if f:
            right, n = sum(f[k]["correct"] for k in ks), sum(f[k]["trials"] for k in ks)
            means = [fn.get(k, {}).get("mean") for k in ks[:2]]
            foreign = f"{right}/{n}; " + " / ".join("–" if m is None else f"{m:.2f}" for m in means)
        lines.append(f"| {r} | {cells(f'engram:{r}')} | {foreign} |")
    for row in ("none", "transcript", "recent", "retrieval"):
        if row in recall:
            lines.append(f"| *{row}* | {cells(row)} | – |")
    return "\n".join(lines) + "\n"


def _x(k: str) -> float:
    return max(float(k), 0.5)  # log axis: k=0 is drawn at 0.5 and labelled 0


def _log_axis(ax, ks: list[str]) -> None:
    ax.set_xscale("log")
    ax.set_xticks([_x(k) for k in ks])
    ax.set_xticklabels(ks)
    ax.minorticks_off()
    ax.set_xlabel("distractor turns k since the fact (log; 0 drawn at 0.5)")


def plot_recall(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ks: list[str] = []
    n = len(results["recall"])
    for i, (mode, by_k) in enumerate(results["recall"].items()):
        ks = [k for k in by_k if by_k[k]["trials"]]
        xs = [_x(k) * (1 + 0.1 * (i - n / 2) / n) for k in ks]  # small offsets so intervals don't hide each other
        ys = [by_k[k]["correct"] / by_k[k]["trials"] for k in ks]
        lo = [y - by_k[k]["low"] for y, k in zip(ys, ks)]
        hi = [by_k[k]["high"] - y for y, k in zip(ys, ks)]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=mode)
    _log_axis(ax, ks)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("recall (Wilson 95% interval)")
    ax.set_title(f"Planted-fact recall vs cycles: {results['model']}, {results['trials']} trials")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_nll(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    rows = {m: by_k for m, by_k in results.get("answer_nll", {}).items()
            if any(c.get("mean") is not None for c in by_k.values())}
    ks: list[str] = []
    for i, (mode, by_k) in enumerate(rows.items()):
        ks = [k for k in by_k if by_k[k].get("mean") is not None]
        xs = [_x(k) * (1 + 0.1 * (i - len(rows) / 2) / max(len(rows), 1)) for k in ks]
        ys = [by_k[k]["mean"] for k in ks]
        err = [0.0 if by_k[k]["low"] is None else by_k[k]["mean"] - by_k[k]["low"] for k in ks]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=mode)
    if ks:
        _log_axis(ax, ks)
    ax.set_ylabel("answer NLL, nats/token (mean, 95% interval)")
    ax.set_title(f"Teacher-forced NLL of the planted answer: {results['model']}, {results['trials']} trials")
    if rows:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_diagnostics(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_recipe = results.get("diagnostics", {})
    names = [n for n in DIAG_TITLES if any(n in d for d in by_recipe.values())]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, name in zip(axes.flat, names):
        for recipe, diags in by_recipe.items():
            by_k = diags.get(name, {})
            ks = list(by_k)
            if ks:
                ax.errorbar([_x(k) for k in ks], [by_k[k]["mean"] for k in ks], yerr=[by_k[k]["sd"] for k in ks],
                            marker="o", capsize=3, label=recipe)
                _log_axis(ax, ks)
        ax.set_xlabel("k")
        ax.set_title(DIAG_TITLES[name], fontsize=10)
        ax.grid(alpha=0.3)
        if len(by_recipe) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"Engram diagnostics per cycle (mean ± sd): {results['model']}, {results['trials']} trials")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(results: dict, out: Path) -> None:
    out = Path(out)
    (out / "recall.md").write_text(recall_table(results))
    if results.get("recipes"):
        (out / "recipes.md").write_text(recipe_table(results))
    plot_recall(results, out / "recall.png")
    plot_nll(results, out / "nll.png")
    plot_diagnostics(results, out / "diagnostics.png")
