"""Reading hidden_states[L] off each forward call of a turn, the states the next engram is written from.

    tap_for(model, layer)           a hook on block L's output where the decoder allows it, else ask_all(layer)
    ask_all(layer)                  the model returns every layer's states (output_hidden_states=True)
    NO_TAP                          nothing read (a turn that keeps no states)

    with tap:                       # the hook lives as long as the context
        out = model(..., output_hidden_states=tap.hidden)
        states = tap.states(out)    # [T, H] of batch row 0, this call's positions

A decode step that asks for output_hidden_states gets all 31 layers' states
collected into its output; the engine needs one of them, so a forward hook on
the block that produces it keeps just that one (the same tensor, not a copy).
"""

from __future__ import annotations

import torch

from . import engram as E


class _Hook:
    hidden = False  # the model need not collect every layer's states

    def __init__(self, block: torch.nn.Module):
        self.block, self.handle, self.caught = block, None, None

    def _hook(self, _module, _args, output):
        self.caught = output[0] if isinstance(output, tuple) else output

    def states(self, _out) -> torch.Tensor:
        caught, self.caught = self.caught, None
        return caught[0]

    def __enter__(self):
        self.handle = self.block.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        self.caught = None
        return False


class _AskAll:
    hidden = True

    def __init__(self, layer: int):
        self.layer = layer

    def states(self, out) -> torch.Tensor:
        return E.extract(out.hidden_states, self.layer)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _NoTap:
    hidden = False

    def states(self, _out) -> torch.Tensor:
        raise RuntimeError("this turn reads no layer states")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


NO_TAP = _NoTap()


def ask_all(layer: int) -> _AskAll:
    return _AskAll(layer)


def tap_for(model, layer: int):
    """A hook on block `layer`'s output (hidden_states[layer]) when that is a plain block output: not the
    embeddings (layer 0) and not the last block's (hidden_states[num_layers] has the final norm applied)."""
    blocks = getattr(model.get_decoder(), "layers", None)
    if blocks is None or not 0 < layer < len(blocks):
        return ask_all(layer)
    return _Hook(blocks[layer - 1])
