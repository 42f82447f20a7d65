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
from .config import EngramConfig
from .loading import LanguageModel


class _StopForward(Exception):
    """Raised by a forward hook to end a pass once the wanted block has run."""


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


def chat_ids(tokenizer, user_text: str, reply_text: str | None = None) -> list[int]:
    """Token ids of one exchange in the model's chat format.

    With reply_text None this ends with the generation prompt (assistant header).
    Models without a chat template get a plain "User:/Assistant:" layout.
    """
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=True
        )
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    else:
        ids = tokenizer(f"User: {user_text}\nAssistant:", add_special_tokens=True)["input_ids"]
    if reply_text is not None:
        ids += tokenizer(reply_text, add_special_tokens=False)["input_ids"]
    return ids


def _cache_of(out):
    """The KV cache of a forward output (`cache` in transformers 5, `past_key_values` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def end_id(tokenizer) -> int:
    """The token that closes a reply; it is part of the turn the engram absorbs."""
    eos = tokenizer.eos_token_id
    return eos if eos is not None else tokenizer.pad_token_id or 0


class Engine:
    """Binds a loaded model to an engram recipe and runs turns. No I/O."""

    def __init__(self, lm: LanguageModel, config: EngramConfig):
        config.check_model(lm.num_layers)
        self.lm, self.config = lm, config
        self.model, self.tokenizer = lm.model, lm.tokenizer
        self.embed_norm = E.mean_row_norm(self.model.get_input_embeddings().weight.detach())
        # transformers 5 renamed the forward's `past_key_values` argument to `cache`.
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def _step(self, ids: list[int], mask: torch.Tensor, past, hidden: bool):
        """Feed ids after the cached prefix; returns the model output."""
        return self.model(input_ids=torch.tensor([ids], device=self.lm.device), attention_mask=mask,
                          use_cache=True, output_hidden_states=hidden, **{self._cache_arg: past})

    # -- pieces -----------------------------------------------------------
    def prepare(self, engram: torch.Tensor | None) -> torch.Tensor | None:
        """The engram as it is injected: scaled per the recipe, on the model's device."""
        if engram is None or engram.shape[0] == 0:
            return None
        if engram.shape[-1] != self.lm.hidden_size:
            raise ValueError(f"engram width {engram.shape[-1]} does not match the model's {self.lm.hidden_size}")
        if self.config.scaling == "embedding-mean-norm":
            engram = E.scale(engram, self.embed_norm)
        return engram.to(self.lm.device)

    def embed(self, ids: list[int]) -> torch.Tensor:
        t = torch.tensor([ids], device=self.lm.device)
        return self.model.get_input_embeddings()(t)

    def compress(self, layer_states: torch.Tensor) -> torch.Tensor:
        """[T, H] layer-L states of the whole turn -> [slots, H] float32 CPU engram."""
        return E.pool(layer_states, self.config.slots).cpu()

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
        """Layer-L states [slots+T, H] of engram + ids in one forward pass.

        stop_early ends the pass after block L (a forward hook on that block
        raises), so the blocks above L, which the engram never sees, are skipped.
        """
        embeds, mask = E.inject(self.prepare(engram), self.embed(ids))
        return self.layer_states(embeds, mask, stop_early=stop_early)[0]

    def layer_states(self, embeds: torch.Tensor, mask: torch.Tensor, *, stop_early: bool = True) -> torch.Tensor:
        """[B, T, H] input embeddings -> [B, T, H] states after block L."""
        layer = self.config.layer
        if layer == 0:
            return embeds
        blocks = getattr(self.model.get_decoder(), "layers", None)
        # hidden_states[num_layers] has the final norm applied, so only L < depth can stop early.
        if stop_early and blocks is not None and layer < len(blocks):
            return self._run_until(blocks[layer - 1], embeds, mask)
        out = self.model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True, use_cache=False)
        return out.hidden_states[layer]

    def _run_until(self, block: torch.nn.Module, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        caught: list[torch.Tensor] = []

        def hook(_module, _args, output):
            caught.append(output[0] if isinstance(output, tuple) else output)
            raise _StopForward

        handle = block.register_forward_hook(hook)
        try:
            self.model.get_decoder()(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return caught[0]

    # -- turns --------------------------------------------------------------
    def absorb(self, engram: torch.Tensor | None, user_text: str, reply_text: str) -> TurnResult:
        """A turn whose reply is already known (replaying a log): one forward, no generation."""
        t0 = time.perf_counter()
        ids = chat_ids(self.tokenizer, user_text, reply_text) + [end_id(self.tokenizer)]
        self.check_fits(engram, ids, 0)
        new = self.compress(self.states_of(engram, ids))
        prompt_len = len(chat_ids(self.tokenizer, user_text))
        slots = 0 if engram is None else engram.shape[0]
        return TurnResult(reply_text, new, slots + prompt_len, prompt_len, len(ids) - prompt_len - 1,
                          0.0, time.perf_counter() - t0, ids)

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
    ) -> TurnResult:
        """Generate a reply to user_text with `engram` injected, then recompress.

        reuse_states=True builds the new engram from the layer-L states the
        generation pass already computed; False runs a second plain forward over
        the finished turn (the reference path; both give the same engram).
        update=False skips the engram update altogether (engram None in the
        result): the no-memory baseline the update overhead is measured against.
        min_new_tokens suppresses the end token until that many were generated.
        KeyboardInterrupt propagates: the caller stores nothing.
        """
        ids = chat_ids(self.tokenizer, user_text)
        self.check_fits(engram, ids, max_new_tokens)
        prefix = self.prepare(engram)
        slots = 0 if prefix is None else prefix.shape[0]
        stop = end_id(self.tokenizer)
        eos_ids = {stop} | ({self.tokenizer.eos_token_id} - {None})
        reuse_states = reuse_states and update
        t0 = time.perf_counter()

        embeds, mask = E.inject(prefix, self.embed(ids))
        out = self.model(inputs_embeds=embeds, attention_mask=mask, use_cache=True, output_hidden_states=reuse_states)
        layer_chunks = [E.extract(out.hidden_states, self.config.layer)] if reuse_states else []
        past, logits = _cache_of(out), out.logits[0, -1]
        reply_ids: list[int] = []
        shown = ""
        fed_all = True  # whether every reply token has been fed through the model
        for _ in range(max_new_tokens):
            if repetition_penalty != 1.0 and reply_ids:
                seen = torch.tensor(sorted(set(reply_ids)), device=logits.device)
                vals = logits[seen]
                logits = logits.clone()
                logits[seen] = torch.where(vals > 0, vals / repetition_penalty, vals * repetition_penalty)
            if len(reply_ids) < min_new_tokens:  # benchmarks need replies of a fixed length
                logits = logits.clone()
                logits[list(eos_ids)] = float("-inf")
            nxt = int(torch.argmax(logits))
            if nxt in eos_ids:
                break
            reply_ids.append(nxt)
            fed_all = False
            if on_text is not None:
                text = self.tokenizer.decode(reply_ids, skip_special_tokens=True)
                if not text.endswith("\ufffd") and len(text) > len(shown):  # hold back half a UTF-8 char
                    on_text(text[len(shown):])
                    shown = text
            if len(reply_ids) == max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
            out = self._step([nxt], mask, past, reuse_states)
            fed_all = True
            if reuse_states:
                layer_chunks.append(E.extract(out.hidden_states, self.config.layer))
            past, logits = _cache_of(out), out.logits[0, -1]
        reply = self.tokenizer.decode(reply_ids, skip_special_tokens=True)
        if on_text is not None and len(reply) > len(shown):
            on_text(reply[len(shown):])
        gen_seconds = time.perf_counter() - t0

        t1 = time.perf_counter()
        if not update:
            return TurnResult(reply, None, slots + len(ids), len(ids), len(reply_ids), gen_seconds, 0.0,
                              ids + reply_ids + [stop])
        if reuse_states:
            # Feed what generation never fed (the closing token, and a last reply
            # token if the length limit cut in) so the states cover the whole turn.
            pending = ([] if fed_all else reply_ids[-1:]) + [stop]
            mask = torch.cat([mask, mask.new_ones((1, len(pending)))], dim=1)
            out = self._step(pending, mask, past, True)
            layer_chunks.append(E.extract(out.hidden_states, self.config.layer))
            states = torch.cat(layer_chunks, dim=0)
        else:
            states = self.states_of(engram, ids + reply_ids + [stop])
        del past, out  # the turn's KV cache ends here
        new = self.compress(states)
        return TurnResult(reply, new, slots + len(ids), len(ids), len(reply_ids), gen_seconds,
                          time.perf_counter() - t1, ids + reply_ids + [stop])
