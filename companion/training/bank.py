"""Turns' layer-L token states, computed once before training.

The trained recipe's reader writes the engram into the residual stream at
layer L, so blocks 1..L of a turn see only placeholders: the turn's own
layer-L states do not depend on the engram at all, and the rolling cycle can
be trained on states computed once per turn. Only the writer (tiny) runs per
cycle, and the frozen model runs only for the question at the end, which is
what makes many-turn episodes affordable on a CPU.

Two approximations, both only in training: a turn is laid out behind a full
engram (N slots) even when the engram is still filling, and surprise is read
with the slots holding placeholders (in a live turn they hold the engram).

    bank = TurnBank.build(engine, turns, firsts)  # turns: [(user, reply)]
    bank.get(i, first=False) -> (states [m, H], surprise [m])
    bank.words[(i, first)] -> [m] word-start flags, for writers that keep words whole
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from companion.batched.rows import padded
from companion.engine.chat_format import end_id, word_starts
from companion.engine.recipes.base import Placement, Written


class TurnBank:
    def __init__(self, turns: list[tuple[str, str]], entries: dict[tuple[int, bool], tuple[torch.Tensor, list]],
                 words: dict[tuple[int, bool], list[bool]] | None = None):
        self.turns, self.entries, self.words = turns, entries, words or {}

    def get(self, index: int, *, first: bool) -> tuple[torch.Tensor, list[float]]:
        return self.entries[(index, first)]

    @classmethod
    @torch.inference_mode()
    def build(cls, engine, turns: list[tuple[str, str]], firsts: set[int], *, batch: int = 16,
              progress=None) -> "TurnBank":
        """Competing token states of every turn behind a full engram, and of `firsts` as a session's first turn."""
        tok, slots, layer = engine.tokenizer, engine.config.slots, engine.config.layer
        dummy = torch.zeros(slots, engine.lm.hidden_size)
        jobs = [(i, False) for i in range(len(turns))] + [(i, True) for i in sorted(firsts)]
        laid = {}
        for i, first in jobs:
            user, reply = turns[i]
            p = engine.reader.place(tok, None if first else dummy, user, reply, layer=layer)
            # The engram is not written: layer-L states below the write depth never see it.
            laid[(i, first)] = Placement(p.ids + [end_id(tok)], p.slots, None, p.depth, p.content, p.user_end)
        jobs.sort(key=lambda j: len(laid[j].ids))  # similar lengths share a pass: little padding
        entries, words = {}, {}
        wants_words = getattr(engine.writer, "needs_words", False)
        for start in range(0, len(jobs), batch):
            chunk = jobs[start:start + batch]
            places = [laid[j] for j in chunk]
            embeds, mask, _ = padded([engine] * len(places), places, left=False)
            # The decoder alone, and the vocabulary projection only where surprise is needed
            # (the turn's own tokens): a fifth of the pass on this model is that projection.
            out = engine.model.get_decoder()(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True,
                                             use_cache=False)
            head = engine.model.get_output_embeddings()
            for row, ((i, first), p) in enumerate(zip(chunk, places)):
                n = len(p.ids)
                states = out.hidden_states[layer][row, :n].float().cpu()
                w = Written(states, p, None, None if first else dummy)
                comps = engine.writer.prior.competitors(w)
                # surprise of token t is read at position t-1 (competitors are never position 0)
                logits = head(out.last_hidden_state[row, [c - 1 for c in comps]]).float()
                lp = torch.log_softmax(logits, dim=-1)
                sur = [-float(lp[j, p.ids[c]]) for j, c in enumerate(comps)]
                entries[(i, first)] = (states[comps].clone(), sur)
                if wants_words:
                    starts = word_starts(tok, p.ids)
                    words[(i, first)] = [bool(starts[c]) for c in comps]
            if progress:
                progress(len(chunk))
        return cls(turns, entries, words)

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors, meta = {}, []
        for n, ((i, first), (states, sur)) in enumerate(sorted(self.entries.items())):
            tensors[f"s{n}"] = states.contiguous()
            tensors[f"u{n}"] = torch.tensor(sur, dtype=torch.float32)
            meta.append([i, first])
        save_file(tensors, str(path), metadata={"entries": json.dumps(meta), "turns": json.dumps(self.turns)})

    @classmethod
    def load(cls, path: Path) -> "TurnBank":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            entries = {(i, first): (f.get_tensor(f"s{n}"), f.get_tensor(f"u{n}").tolist())
                       for n, (i, first) in enumerate(json.loads(meta["entries"]))}
        return cls([tuple(t) for t in json.loads(meta["turns"])], entries)
