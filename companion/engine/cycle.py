"""The rolling engram cycle: one turn = previous engram + new input -> reply + new engram.

Nothing outlives a turn but the engram: the KV cache and hidden states built
while generating are dropped when `run_turn` returns, so the next prompt is
only the engram (N slots) and the next input, however long the conversation.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import engram as E
from . import taps
from .chat_format import chat_ids, end_id, word_starts  # noqa: F401  (re-exported: the cycle's token layout)
from .config import ConfigError, EngramConfig
from .halves import lower
from .loading import LanguageModel
from .recipes.base import Placement, Written, get_recipe
from .recipes.fixed import fixed_hash
from .recipes.writers import state_part
from .residual import NoWrite, ResidualWrite, surprise_of  # noqa: F401  (surprise_of: used by batch)
from .sampling import Sampling, pick
from .sources import SlotSource, trace_sources


class InputTooLongError(ValueError):
    """The input does not fit the model's context window with the engram and a reply."""


@dataclass
class TurnResult:
    reply: str
    engram: torch.Tensor | None  # [N, H] float32 CPU, unscaled (scaled at injection); None if update=False
    prompt_tokens: int  # what the model was fed before generating: engram slots + input
    input_tokens: int
    reply_tokens: int
    gen_seconds: float
    update_seconds: float
    turn_ids: list[int] | None = None  # the turn's tokens after the engram: input + reply + end
    cut: bool = False  # the reply stopped at max_new_tokens, not at the model's end token
    # Per slot of the new engram: where it came from (companion.engine.sources); None: an averaging
    # recipe, whose slots have no single source, or a turn run without tracing.
    sources: list[SlotSource | None] | None = None


def _cache_of(out):
    """The KV cache of a forward output (`cache` in transformers 5, `past_key_values` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


class Engine:
    """Binds a loaded model to an engram recipe and runs turns. No I/O.

    The recipe's reader lays out each prompt (companion.engine.recipes.readers) and
    its writer makes the next engram from the turn's layer-L states
    (companion.engine.recipes.writers); the engine only runs the model.
    """

    def __init__(self, lm: LanguageModel, config: EngramConfig, *, fixed: dict[str, torch.Tensor] | None = None):
        """fixed: the recipe's fixed tensors given directly instead of built (a writer being trained)."""
        config.check_model(lm.num_layers)
        self.lm = lm
        self.model, self.tokenizer = lm.model, lm.tokenizer
        self.recipe = get_recipe(config.recipe)
        self.reader, self.writer = self.recipe.reader, self.recipe.writer
        self.embed_norm = E.mean_row_norm(self.model.get_input_embeddings().weight.detach())
        # transformers 5 renamed the forward's `past_key_values` argument to `cache`.
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.config = config
        self.fixed = dict(fixed) if fixed is not None else {name: build(self) for name, build in self.recipe.fixed.items()}
        digest = fixed_hash(self.fixed)
        if config.fixed and config.fixed != digest:
            raise ConfigError(f"recipe {config.recipe!r}'s fixed tensors on this model hash to {digest[:12]}, but the "
                              f"session was built with {config.fixed[:12]}; start a new session to use them")
        self.config = config.with_fixed(digest)
        self.width = self.recipe.stored_width(lm.hidden_size)
        # Where the reader writes the engram: 0 = input embeddings, L = the stream entering block L+1.
        self.depth = config.layer if self.reader.depth_is_layer else 0
        # run_turn reads layer L's states with a hook on that block (companion.engine.taps); False asks the
        # model for every layer's states at every step instead (the slower path, kept for bench_serve.py).
        self.tap_layer = True

    def _step(self, ids: list[int], mask: torch.Tensor, past, hidden: bool):
        """Feed ids after the cached prefix; returns the model output."""
        return self.model(input_ids=torch.tensor([ids], device=self.lm.device), attention_mask=mask,
                          use_cache=True, output_hidden_states=hidden, **{self._cache_arg: past})

    def _tap(self):
        """How run_turn reads hidden_states[L] off its passes (companion.engine.taps)."""
        layer = self.config.layer
        return taps.tap_for(self.model, layer) if self.tap_layer else taps.ask_all(layer)

    # -- pieces -----------------------------------------------------------
    def prepare(self, engram: torch.Tensor | None) -> torch.Tensor | None:
        """The engram's vectors as the reader writes them (scaled or not), on the model's device."""
        if engram is None or engram.shape[0] == 0:
            return None
        if engram.dim() != 2 or engram.shape[-1] != self.width:
            raise ValueError(f"engram width {engram.shape[-1]} does not match this recipe on this model "
                             f"({self.width})")
        vectors = state_part(engram, self.writer.extra_columns)
        return self.reader.vectors(vectors, self.embed_norm).to(self.lm.device)

    def place(self, engram: torch.Tensor | None, user: str, reply: str | None = None, *,
              system: str | None = None) -> Placement:
        """The prompt of one turn with the engram placed by the recipe's reader (and a system message)."""
        return self.reader.place(self.tokenizer, self.prepare(engram), user, reply, layer=self.config.layer,
                                 system=system)

    def embed(self, ids: list[int]) -> torch.Tensor:
        t = torch.tensor([ids], device=self.lm.device)
        return self.model.get_input_embeddings()(t)

    def embeds_of(self, p: Placement) -> torch.Tensor:
        """[1, T, H] input embeddings of a placement (slots filled when the reader writes at the input)."""
        embeds = self.embed(p.ids)
        if p.vectors is not None and p.slots and not self.reader.depth_is_layer:
            embeds = embeds.clone()
            embeds[0, p.slots] = p.vectors.to(embeds.dtype)
        return embeds

    def writing(self, rows: list[tuple[int, list[int], torch.Tensor]], depth: int):
        """Context for one forward call: the residual stream entering block depth+1 gets
        rows' vectors at their slot positions (rows: (batch row, positions, [N, H]))."""
        return ResidualWrite(self.model.get_decoder().layers[depth], rows) if self.reader.depth_is_layer \
            else NoWrite()

    def compress(self, written: Written, ids: list[int]) -> torch.Tensor:
        """The recipe's writer: a turn's layer-L states (at the positions of `ids`) -> the next engram,
        float32 CPU."""
        if getattr(self.writer, "needs_words", False):
            written.words = word_starts(self.tokenizer, ids)
        return self.writer.write(written, self.config.slots, self.fixed).float().cpu()

    def slot_sources(self, written: Written, ids: list[int], new: torch.Tensor,
                     old_sources: list[SlotSource | None] | None, turn: int) -> list[SlotSource | None] | None:
        """Where each slot of `new` came from (see companion.engine.sources); None for writers whose slots
        have no single source."""
        enter = getattr(self.writer, "entering", None)
        if enter is None:
            return None
        slots = set(written.placement.slots)
        positions = [i for i in range(written.placement.content, len(ids)) if i not in slots]
        cands = enter(written.states[positions].float(), self.fixed)
        if cands is None:
            return None
        return trace_sources(new, written.engram, old_sources, cands.detach().float().cpu(), positions, ids, turn,
                             self.tokenizer, cols=self.writer.extra_columns)

    def check_fits(self, engram: torch.Tensor | None, ids: list[int], max_new_tokens: int) -> None:
        slots = 0 if engram is None else engram.shape[0]
        need = slots + len(ids) + max_new_tokens + 1
        if need > self.lm.context_window:
            raise InputTooLongError(
                f"input is {len(ids)} tokens; with the {slots}-slot engram and room for a "
                f"{max_new_tokens}-token reply it exceeds the {self.lm.context_window}-token context window"
            )

    @torch.inference_mode()
    def states_of(self, engram: torch.Tensor | None, ids: list[int], *, stop_early: bool = True) -> torch.Tensor:
        """Layer-L states [slots+T, H] of the seed layout: engram prefix + ids, one forward pass."""
        embeds, mask = E.inject(self.prepare(engram), self.embed(ids))
        return self.layer_states(embeds, mask, stop_early=stop_early)[0]

    @torch.inference_mode()
    def turn_states(self, engram: torch.Tensor | None, user: str, reply: str) -> torch.Tensor:
        """Layer-L states [T, H] of a finished turn laid out by the recipe (diagnostics)."""
        p = self.place(engram, user, reply)
        return self._pass(p, p.ids + [end_id(self.tokenizer)], surprise=False).states

    def layer_states(self, embeds: torch.Tensor, mask: torch.Tensor, *, stop_early: bool = True) -> torch.Tensor:
        """[B, T, H] input embeddings -> [B, T, H] states after block L."""
        layer = self.config.layer
        if layer == 0:
            return embeds
        blocks = getattr(self.model.get_decoder(), "layers", None)
        # hidden_states[num_layers] has the final norm applied, so only L < depth can stop early.
        if stop_early and blocks is not None and layer < len(blocks):
            return lower(self.model, embeds, mask, layer)
        out = self.model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True, use_cache=False)
        return out.hidden_states[layer]

    def seen_states(self, states: torch.Tensor, p: Placement) -> torch.Tensor:
        """Layer-L states as the model saw them: where the reader wrote the engram at layer L,
        the residual stream there IS the engram (hidden_states records it before the write)."""
        if p.vectors is not None and p.slots and self.reader.depth_is_layer and p.depth == self.config.layer:
            states = states.clone()
            states[p.slots] = p.vectors.to(states.dtype)
        return states

    def _pass(self, p: Placement, ids: list[int], *, surprise: bool) -> Written:
        """One forward over the placement's prompt extended to `ids` (a finished turn)."""
        embeds = self.embeds_of(Placement(ids, p.slots, p.vectors, p.depth, p.content))
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        rows = [(0, p.slots, p.vectors)] if p.vectors is not None else []
        with self.writing(rows, p.depth):
            if surprise:
                out = self.model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True, use_cache=False)
                states = out.hidden_states[self.config.layer][0]
                sur = surprise_of(out.logits[0], ids)
            else:
                states, sur = self.layer_states(embeds, mask)[0], None
        return Written(self.seen_states(states.float(), p), p, sur)

    # -- turns --------------------------------------------------------------
    def absorb(self, engram: torch.Tensor | None, user_text: str, reply_text: str) -> TurnResult:
        """A turn whose reply is already known (replaying a log): one forward, no generation."""
        t0 = time.perf_counter()
        turn = chat_ids(self.tokenizer, user_text, reply_text) + [end_id(self.tokenizer)]
        self.check_fits(engram, turn, 0)
        p = self.place(engram, user_text, reply_text)
        with torch.inference_mode():
            ids = p.ids + [end_id(self.tokenizer)]
            written = self._pass(p, ids, surprise=self.writer.needs_surprise)
        written.engram = engram
        new = self.compress(written, ids)
        prompt_len = len(chat_ids(self.tokenizer, user_text))
        return TurnResult(reply_text, new, len(self.place(engram, user_text).ids), prompt_len,
                          len(turn) - prompt_len - 1,
                          0.0, time.perf_counter() - t0, turn)

    @torch.inference_mode()
    def answer_nll(self, engram: torch.Tensor | None, user_text: str, answer: str) -> tuple[float, int]:
        """Teacher-forced -log p(answer tokens | engram + user_text): (sum over tokens, token count)."""
        p = self.place(engram, user_text)
        target = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not target:
            return 0.0, 0
        ids = p.ids + target
        embeds = self.embeds_of(Placement(ids, p.slots, p.vectors, p.depth, p.content))
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        with self.writing([(0, p.slots, p.vectors)] if p.vectors is not None else [], p.depth):
            logits = self.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits[0]
        sur = surprise_of(logits, ids)
        return float(sur[len(p.ids):].sum()), len(target)

    @torch.inference_mode()
    def run_turn(
        self,
        engram: torch.Tensor | None,
        user_text: str,
        *,
        on_text: Callable[[str], None] | None = None,
        max_new_tokens: int = 200,
        repetition_penalty: float = 1.1,
        min_new_tokens: int = 0,
        reuse_states: bool = True,
        update: bool = True,
        system: str | None = None,
        sampling: Sampling | None = None,
        turn: int = 0,
        sources: list[SlotSource | None] | None = None,
    ) -> TurnResult:
        """Generate a reply to user_text with `engram` placed by the reader, then write the next engram.

        reuse_states=True builds the new engram from the layer-L states the
        generation pass already computed; False runs a second plain forward over
        the finished turn (the reference path; both give the same engram).
        update=False skips the engram update altogether (engram None in the
        result): the no-memory baseline the update overhead is measured against.
        min_new_tokens suppresses the end token until that many were generated.
        system: the system message of the chat template (None: the template's default).
        sampling: None or greedy picks the argmax; otherwise turn `turn` draws from its seeded generator.
        sources: the old engram's slot sources; the result's are traced from them (turn `turn`).
        KeyboardInterrupt propagates: the caller stores nothing.
        """
        ids = chat_ids(self.tokenizer, user_text, system=system)
        self.check_fits(engram, ids, max_new_tokens)
        p = self.place(engram, user_text, system=system)
        generator = sampling.generator(turn) if sampling is not None else None
        stop = end_id(self.tokenizer)
        eos_ids = {stop} | ({self.tokenizer.eos_token_id} - {None})
        reuse_states = reuse_states and update
        want_sur = reuse_states and self.writer.needs_surprise
        t0 = time.perf_counter()

        tap = self._tap() if reuse_states else taps.NO_TAP
        with tap:  # open around this turn's own passes only: it keeps whatever block L outputs
            embeds = self.embeds_of(p)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            with self.writing([(0, p.slots, p.vectors)] if p.vectors is not None else [], p.depth):
                out = self.model(inputs_embeds=embeds, attention_mask=mask, use_cache=True,
                                 output_hidden_states=tap.hidden)
            layer_chunks = [tap.states(out)] if reuse_states else []
            sur_chunks = [surprise_of(out.logits[0], p.ids)] if want_sur else []
            past, logits = _cache_of(out), out.logits[0, -1]
            reply_ids: list[int] = []
            shown = ""
            fed_all = True  # whether every reply token has been fed through the model
            raw = logits  # the unpenalised logits of the latest position (surprise is read off these)
            cut = False
            for _ in range(max_new_tokens):
                raw = logits
                if repetition_penalty != 1.0 and reply_ids:
                    seen = torch.tensor(sorted(set(reply_ids)), device=logits.device)
                    vals = logits[seen]
                    logits = logits.clone()
                    logits[seen] = torch.where(vals > 0, vals / repetition_penalty, vals * repetition_penalty)
                if len(reply_ids) < min_new_tokens:  # benchmarks need replies of a fixed length
                    logits = logits.clone()
                    logits[list(eos_ids)] = float("-inf")
                nxt = pick(logits, sampling, generator)
                if nxt in eos_ids:
                    break
                if want_sur:
                    sur_chunks.append(-torch.log_softmax(raw.float(), -1)[nxt].reshape(1).cpu())
                reply_ids.append(nxt)
                fed_all = False
                if on_text is not None:
                    text = self.tokenizer.decode(reply_ids, skip_special_tokens=True)
                    if not text.endswith("\ufffd") and len(text) > len(shown):  # hold back half a UTF-8 char
                        on_text(text[len(shown):])
                        shown = text
                if len(reply_ids) == max_new_tokens:
                    cut = True
                    break
                mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
                out = self._step([nxt], mask, past, tap.hidden)
                fed_all = True
                if reuse_states:
                    layer_chunks.append(tap.states(out))
                past, logits = _cache_of(out), out.logits[0, -1]
            reply = self.tokenizer.decode(reply_ids, skip_special_tokens=True)
            if on_text is not None and len(reply) > len(shown):
                on_text(reply[len(shown):])
            gen_seconds = time.perf_counter() - t0

            t1 = time.perf_counter()
            turn_ids = ids + reply_ids + [stop]
            if not update:
                return TurnResult(reply, None, len(p.ids), len(ids), len(reply_ids), gen_seconds, 0.0, turn_ids, cut)
            if reuse_states:
                # Feed what generation never fed (the closing token, and a last reply
                # token if the length limit cut in) so the states cover the whole turn.
                pending = ([] if fed_all else reply_ids[-1:]) + [stop]
                mask = torch.cat([mask, mask.new_ones((1, len(pending)))], dim=1)
                out = self._step(pending, mask, past, tap.hidden)
                if want_sur:
                    # The closing token is predicted after the last fed token: by the loop's last
                    # raw logits, or (length cut) by the pending step's first position.
                    before_stop = raw if fed_all else out.logits[0, -2]
                    sur_chunks.append(-torch.log_softmax(before_stop.float(), -1)[stop].reshape(1).cpu())
                layer_chunks.append(tap.states(out))
                states = torch.cat(layer_chunks, dim=0).float()
                written = Written(self.seen_states(states, p), p, torch.cat(sur_chunks).cpu() if want_sur else None)
            else:
                written = self._pass(p, p.ids + reply_ids + [stop], surprise=self.writer.needs_surprise)
        written.engram = engram
        del past, out  # the turn's KV cache ends here
        full = p.ids + reply_ids + [stop]
        new = self.compress(written, full)
        traced = self.slot_sources(written, full, new, sources, turn)
        return TurnResult(reply, new, len(p.ids), len(ids), len(reply_ids), gen_seconds,
                          time.perf_counter() - t1, turn_ids, cut, traced)
