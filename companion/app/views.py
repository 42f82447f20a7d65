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
    for v in views:
        out += [f"\n#{v.index} you: {v.user}", f"#{v.index} companion: {v.reply}",
                f"   engram {v.engram_shape} norm {v.engram_norm:.2f} [{v.engram_ok}] | prompt "
                f"{v.prompt_tokens} vs transcript {v.transcript_tokens} tokens | {v.seconds:.1f}s"]
    return "\n".join(out)
