"""How the CLI prints what the service returns: the turn footer, the sessions table, a transcript."""

from __future__ import annotations

from companion.engine.config import EngramConfig

from .dates import ago


def footer_line(report) -> str:
    return (f"cycle {report.cycle} | prompt {report.prompt_tokens} tokens (transcript would be "
            f"{report.transcript_tokens}) | {report.reply_tokens} tokens in {report.gen_seconds:.1f}s "
            f"+ update {report.update_seconds * 1000:.0f} ms")


def sessions_table(items) -> str:
    lines = [f"{s.name:24} {s.turns:5} turns  {s.model:28} created {ago(s.created):14} last used {ago(s.last_used)}"
             for s in items]
    return "\n".join(lines)


def transcript_text(comp, name: str) -> str:
    info, views = comp.show(name)
    out = [f"session {info['name']}: {info['cycle']} turns, model {info['model']}, "
           f"recipe {EngramConfig.from_dict(info['recipe']).describe()}, recall {info['recall']}"]
    out += [f"system from turn {p['from_turn']}: {p['text'] or '(cleared: the model default)'}" for p in info["system"]]
    forgot: dict[int, list[dict]] = {}
    for f in info.get("forgets", []):
        forgot.setdefault(f["cycle"], []).append(f)
    for v in views:
        out += [f"\n#{v.index} you: {v.user}", f"#{v.index} companion: {v.reply}",
                f"   engram {v.engram_shape} norm {v.engram_norm:.2f} [{v.engram_ok}] | prompt "
                f"{v.prompt_tokens} vs transcript {v.transcript_tokens} tokens | {v.seconds:.1f}s"]
        out += [f"   forgot {', '.join(w['text'] for w in f['removed'])} from this memory {ago(f['when'])} "
                f"(asked: {f['asked']}; {f['slots_before']} -> {f['slots_after']} slots)"
                for f in forgot.get(v.index, [])]
    return "\n".join(out)


def memory_text(view) -> str:
    """`/memory` and `companion memory NAME`: the words the engram's slots came from, in slot order."""
    head = f"memory of session {view.name} (recipe {view.recipe}, after turn {view.cycle}): {view.slots} of " \
           f"{view.capacity} slots"
    if view.cycle == 0:
        return head + "\n(empty: no turns yet)"
    if view.averaged:
        norms = " ".join(f"{n:.1f}" for n in view.norms)
        return (f"{head}\neach slot is the average of a stretch of the last turn's states (which carry the "
                f"memory before it), not one word; slot norms: {norms}")
    lines = [head, f"{'slots':>9}  {'turn':>5}  {'score':>6}  word"]
    for w in view.words:
        span = f"{w.slots[0]}" if len(w.slots) == 1 else f"{w.slots[0]}-{w.slots[-1]}"
        turn = f"#{w.turn}" if w.turn is not None else "?"
        score = f"{w.score:6.2f}" if w.score is not None else "     -"
        lines.append(f"{span:>9}  {turn:>5}  {score}  {w.text if w.turn is not None else '(source unknown)'}")
    for f in view.forgets:
        if f["cycle"] == view.cycle:
            taken = ", ".join(w["text"] for w in f["removed"])
            lines.append(f"forgotten {ago(f['when'])}: {taken} (asked: {f['asked']})")
    return "\n".join(lines)


def forget_text(report) -> str:
    taken = ", ".join(f"{w.text} (turn {w.turn})" for w in report.removed)
    return (f"forgot {taken} from session {report.name}'s memory: {report.slots_before} -> {report.slots_after} "
            f"slots; later turns fill the freed ones")
