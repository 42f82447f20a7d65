"""The format's ceiling: 32 vectors optimised directly for one fact, then asked about it.

No writer is involved. For a planted fact, N vectors are optimised by
gradient descent (Adam; the LM is frozen and gets no gradient) so that the
model, given only those vectors through a reader and a neutral instruction
(TRAIN_PROMPT), reproduces the fact's *statement* as its reply (teacher-forced
cross-entropy on the statement tokens and the closing token). The question
and the answer are never seen during optimisation. Then the fact's question
is asked with the same vectors through the same reader (greedy decoding) and
the answer's teacher-forced NLL is recorded. What the vectors then answer is
the most any writer could get out of that reader with N vectors.

    engine = engine_for(lm, "deep-framed")
    o = optimise(engine, fact.statement, steps=200, lr=0.05, seed=0)
    reply = ask_with(engine, o.vectors, fact.question)
    total, n = nll_with(engine, o.vectors, fact.question, fact.answer)

Readers (ORACLE_READERS): the vectors go where a recipe's reader puts the
engram, raw (the reader's own scaling is bypassed: the optimiser owns the
norm). `*-constrained` deep readers keep each vector on the manifold of real
layer-L states: V = r * normalize(mean + C @ B.T), with B the top-k principal
directions and r the mean norm of real layer-L states of neutral chat (sinks
excluded); only C is optimised.
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from companion.engine.chat_format import chat_ids, end_id
from companion.engine.config import EngramConfig
from companion.engine.cycle import Engine
from companion.engine.recipes.base import Placement
from companion.engine.recipes.fixed import MEAN_TEXT
from companion.engine.recipes.writers import sink_positions

TRAIN_PROMPT = "Repeat what I told you."

# oracle reader -> (recipe whose reader places the vectors, constrained to real layer-L states)
ORACLE_READERS: dict[str, tuple[str, bool]] = {
    "prefix": ("seed", False),
    "framed": ("framed", False),
    "deep": ("deep", False),
    "deep-framed": ("deep-framed", False),
    "deep-constrained": ("deep", True),
    "deep-framed-constrained": ("deep-framed", True),
}

# More neutral chat for the real-state pool (written for this purpose; no evaluation text in it).
EXTRA_TEXT = [
    ("The bus was late again this morning.", "That is annoying. Maybe leave ten minutes earlier tomorrow."),
    ("I want to learn to play the guitar.", "Start with a few simple chords and practise a little every day."),
    ("It has been raining all week here.", "A good week for tea, films and staying warm indoors."),
    ("Which is better for a picnic, a park or a beach?", "A park is easier: shade, grass and no sand in the food."),
    ("My neighbour plays loud music at night.", "A friendly word with them first usually works best."),
    ("How long should I boil an egg?", "About seven minutes for a firm yolk, a bit less for a soft one."),
    ("I keep forgetting to water my plants.", "A reminder on your phone twice a week could help."),
    ("Do you think I should take the train or drive?", "The train lets you rest and read on the way."),
]


def reader_name(name: str) -> str:
    """'oracle:deep' or 'deep' -> 'deep' (a KeyError names the known ones)."""
    bare = name.split(":", 1)[1] if name.startswith("oracle:") else name
    if bare not in ORACLE_READERS:
        raise KeyError(f"unknown oracle reader {name!r}; known: {', '.join(ORACLE_READERS)}")
    return bare


def engine_for(lm, reader: str, *, layer: int = 16, slots: int = 32) -> Engine:
    recipe, _ = ORACLE_READERS[reader_name(reader)]
    return Engine(lm, EngramConfig(layer=layer, slots=slots, recipe=recipe))


@contextmanager
def frozen(model: torch.nn.Module):
    """No parameter requires grad inside (so none gets a gradient); flags restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)


@contextmanager
def _from_block(model: torch.nn.Module, depth: int):
    """The model's forward runs only blocks depth.. (its inputs_embeds is the stream entering block depth+1).

    The decoder's layer list is swapped for its tail for the duration; the
    model's own forward still builds the causal mask and rotary embeddings.
    """
    decoder = model.get_decoder()
    layers = decoder.layers
    decoder.layers = torch.nn.ModuleList(list(layers)[depth:])
    try:
        yield model
    finally:
        decoder.layers = layers


# -- real vectors at the reader's depth ------------------------------------
@dataclass
class Pool:
    """Real vectors at a reader's depth: input embeddings (depth 0) or layer-L states, sinks excluded."""

    vectors: torch.Tensor  # [M, H] float32
    depth: int

    @property
    def radius(self) -> float:
        return float(self.vectors.norm(dim=-1).mean())


@torch.no_grad()
def real_pool(engine: Engine) -> Pool:
    """The vectors real neutral chat puts where the reader writes (MEAN_TEXT + EXTRA_TEXT)."""
    rows = []
    tok = engine.tokenizer
    depth = engine.depth
    for user, reply in [*MEAN_TEXT, *EXTRA_TEXT]:
        ids = chat_ids(tok, user, reply) + [end_id(tok)]
        embeds = engine.embed(ids)
        if depth == 0:
            rows.append(embeds[0, 1:].float())
            continue
        out = engine.model(inputs_embeds=embeds, output_hidden_states=True, use_cache=False)
        states = out.hidden_states[depth][0].float()
        keep = sorted(set(range(states.shape[0])) - set(sink_positions(states)))
        rows.append(states[keep])
    return Pool(torch.cat(rows).cpu(), depth)


@dataclass
class Subspace:
    """V = radius * normalize(mean + C @ basis.T): vectors of real norm in a real principal subspace."""

    mean: torch.Tensor  # [H]
    basis: torch.Tensor  # [H, k] orthonormal
    radius: float
    explained: float  # share of the pool's variance the k directions hold

    @classmethod
    def fit(cls, pool: Pool, k: int) -> "Subspace":
        x = pool.vectors.double()
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(k, vh.shape[0])
        var = s.pow(2)
        return cls(mean.float(), vh[:k].T.float().contiguous(), pool.radius, float(var[:k].sum() / var.sum()))

    def coords(self, v: torch.Tensor) -> torch.Tensor:
        return (v - self.mean) @ self.basis

    def vectors(self, c: torch.Tensor) -> torch.Tensor:
        v = self.mean + c @ self.basis.T
        return v * (self.radius / v.norm(dim=-1, keepdim=True).clamp_min(1e-6))


# -- forward passes with raw vectors ---------------------------------------
def placement(engine: Engine, vectors: torch.Tensor, user: str, reply: str | None = None) -> Placement:
    """The reader's layout with the raw vectors (no reader scaling)."""
    return engine.reader.place(engine.tokenizer, vectors, user, reply, layer=engine.config.layer)


def _target_ids(engine: Engine, text: str, close: bool) -> list[int]:
    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + [end_id(engine.tokenizer)] if close else ids


class _Scorer:
    """Teacher-forced -log p(target | vectors + user) for many vectors on one fixed layout.

    For a reader that writes at layer L the stream entering block L+1 is
    computed once for the layout (it does not depend on the vectors) and only
    blocks L+1.. are run per call.
    """

    def __init__(self, engine: Engine, slots: int, user: str, target: list[int]):
        self.engine, self.model = engine, engine.model
        dummy = torch.zeros(slots, engine.lm.hidden_size)
        p = placement(engine, dummy, user)
        self.ids, self.slots, self.depth = p.ids + target, p.slots, p.depth
        self.n = len(target)
        self.target = torch.tensor(target, device=engine.lm.device)
        embeds = engine.embed(self.ids)
        if self.depth == 0:
            self.base = embeds.detach()
        else:
            with torch.no_grad():
                out = self.model(inputs_embeds=embeds, output_hidden_states=True, use_cache=False)
            self.base = out.hidden_states[self.depth].detach()

    def token_nll(self, vectors: torch.Tensor) -> torch.Tensor:
        """[n] -log p of each target token."""
        h = self.base.clone()
        h[0, self.slots] = vectors.to(h.dtype)
        mask = torch.ones(h.shape[:2], dtype=torch.long, device=h.device)
        keep = self.n + 1  # the last n+1 positions; the final one predicts past the target
        if self.depth == 0:
            logits = self.model(inputs_embeds=h, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
        else:
            with _from_block(self.model, self.depth):
                logits = self.model(inputs_embeds=h, attention_mask=mask, use_cache=False,
                                    logits_to_keep=keep).logits
        lp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
        return -lp.gather(1, self.target[:, None])[:, 0]


def reconstruction_loss(engine: Engine, vectors: torch.Tensor, text: str, prompt: str = TRAIN_PROMPT) -> torch.Tensor:
    """Mean CE of the reply `text` + closing token, given only the vectors and `prompt` (differentiable)."""
    return _Scorer(engine, vectors.shape[0], prompt, _target_ids(engine, text, True)).token_nll(vectors).mean()


@dataclass
class Optimised:
    vectors: torch.Tensor  # [N, H] float32, raw (as the reader writes them)
    losses: list[float] = field(default_factory=list)  # reconstruction loss before each step, then the final one
    seconds: float = 0.0
    explained: float | None = None  # constrained: variance share of the subspace

    @property
    def steps(self) -> int:
        return len(self.losses) - 1


def optimise(engine: Engine, text: str, steps: int = 200, lr: float = 0.05, seed: int = 0, *,
             constrained: bool = False, k: int = 64, prompt: str = TRAIN_PROMPT,
             stop_below: float | None = None, pool: Pool | None = None) -> Optimised:
    """Optimise engine.config.slots vectors so the model replies `text` to `prompt` given only them.

    Starts from real vectors at the reader's depth (random rows of the neutral
    pool, drawn with `seed`). lr is relative: Adam's step is lr times the
    RMS coordinate of the starting parameter. stop_below ends early once the
    mean per-token loss is under it. Deterministic for a seed on one machine.
    """
    t0 = time.perf_counter()
    pool = pool if pool is not None else real_pool(engine)
    gen = torch.Generator().manual_seed(seed)
    n = engine.config.slots
    start = pool.vectors[torch.randint(pool.vectors.shape[0], (n,), generator=gen)].clone()
    sub = None
    if constrained:
        if engine.depth == 0:
            raise ValueError("the constrained oracle is for readers that write at a layer")
        sub = Subspace.fit(pool, k)
        param = sub.coords(start)
    else:
        param = start
    param = param.to(engine.lm.device).requires_grad_(True)
    opt = torch.optim.Adam([param], lr=lr * float(param.detach().pow(2).mean().sqrt()))
    to_vectors = sub.vectors if sub is not None else (lambda p: p)
    losses: list[float] = []
    with frozen(engine.model):
        scorer = _Scorer(engine, n, prompt, _target_ids(engine, text, True))
        for _ in range(steps):
            loss = scorer.token_nll(to_vectors(param)).mean()
            losses.append(loss.item())
            if stop_below is not None and losses[-1] < stop_below:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                losses.append(float(scorer.token_nll(to_vectors(param)).mean()))
    with torch.no_grad():
        vectors = to_vectors(param).detach().float().cpu()
    return Optimised(vectors, losses, time.perf_counter() - t0, sub.explained if sub is not None else None)


@torch.no_grad()
def nll_with(engine: Engine, vectors: torch.Tensor, user: str, answer: str) -> tuple[float, int]:
    """Teacher-forced -log p(answer | vectors + user): (sum over tokens, token count)."""
    target = _target_ids(engine, answer, False)
    if not target:
        return 0.0, 0
    nll = _Scorer(engine, vectors.shape[0], user, target).token_nll(vectors.to(engine.lm.device))
    return float(nll.sum()), len(target)


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


@torch.no_grad()
def ask_with(engine: Engine, vectors: torch.Tensor, question: str, max_new_tokens: int = 16) -> str:
    """Greedy reply to `question` with the raw vectors placed by the reader (written on the prefill only)."""
    model, tok = engine.model, engine.tokenizer
    v = vectors.to(engine.lm.device)
    p = placement(engine, v, question)
    embeds = engine.embeds_of(p)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    with engine.writing([(0, p.slots, v)], p.depth):
        out = model(inputs_embeds=embeds, attention_mask=mask, use_cache=True)
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    stops = {end_id(tok)} | ({tok.eos_token_id} - {None})
    reply: list[int] = []
    for _ in range(max_new_tokens):
        nxt = int(torch.argmax(out.logits[0, -1]))
        if nxt in stops:
            break
        reply.append(nxt)
        if len(reply) == max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
        out = model(input_ids=torch.tensor([[nxt]], device=embeds.device), attention_mask=mask, use_cache=True,
                    **{cache_arg: _cache_of(out)})
    return tok.decode(reply, skip_special_tokens=True)


# -- one trial, and the table over trials -----------------------------------
def run_trial(engine: Engine, fact, *, reader: str, trial: int, seed: int, steps: int, lr: float,
              k: int = 64, stop_below: float | None = None, max_new_tokens: int = 16,
              pool: Pool | None = None) -> dict:
    """Optimise for fact.statement, then ask fact.question with the vectors (and with the starting
    vectors, the control). One JSON-able record."""
    from .scoring import is_correct

    _, constrained = ORACLE_READERS[reader_name(reader)]
    pool = pool if pool is not None else real_pool(engine)
    t0 = time.perf_counter()
    o = optimise(engine, fact.statement, steps, lr, seed * 1000 + trial, constrained=constrained, k=k,
                 stop_below=stop_below, pool=pool)
    recon = ask_with(engine, o.vectors, TRAIN_PROMPT, max_new_tokens=64)
    reply = ask_with(engine, o.vectors, fact.question, max_new_tokens)
    total, n = nll_with(engine, o.vectors, fact.question, fact.answer)
    start = optimise(engine, fact.statement, 0, lr, seed * 1000 + trial, constrained=constrained, k=k, pool=pool)
    control = ask_with(engine, start.vectors, fact.question, max_new_tokens)
    c_total, _ = nll_with(engine, start.vectors, fact.question, fact.answer)
    return {
        "reader": f"oracle:{reader_name(reader)}", "trial": trial, "seed": seed, "template": fact.template,
        "statement": fact.statement, "question": fact.question, "answer": fact.answer,
        "reply": reply, "correct": is_correct(reply, fact.answer, fact.aliases),
        "answer_nll": total, "answer_tokens": n,
        "reconstruction": recon, "reconstruction_exact": recon.strip() == fact.statement.strip(),
        "loss_start": o.losses[0], "loss_final": o.losses[-1], "steps_run": o.steps,
        "vector_norm_mean": float(o.vectors.norm(dim=-1).mean()), "real_norm_mean": pool.radius,
        "explained": o.explained,
        "control_reply": control, "control_correct": is_correct(control, fact.answer, fact.aliases),
        "control_answer_nll": c_total,
        "seconds": time.perf_counter() - t0,
    }


def summarise(records: list[dict]) -> list[dict]:
    """Per reader (first-seen order): recall with a Wilson 95% interval, mean answer NLL, and diagnostics."""
    from .scoring import wilson

    rows = []
    for reader in dict.fromkeys(r["reader"] for r in records):
        rs = [r for r in records if r["reader"] == reader]
        n = len(rs)
        correct = sum(r["correct"] for r in rs)
        lo, hi = wilson(correct, n)
        rows.append({
            "reader": reader, "trials": n, "correct": correct, "recall": correct / n, "wilson": [lo, hi],
            "answer_nll": sum(r["answer_nll"] for r in rs) / n,
            "answer_nll_per_token": sum(r["answer_nll"] for r in rs) / max(1, sum(r["answer_tokens"] for r in rs)),
            "reconstruction_exact": sum(r["reconstruction_exact"] for r in rs),
            "loss_final": sum(r["loss_final"] for r in rs) / n,
            "steps_run": sum(r["steps_run"] for r in rs) / n,
            "vector_norm_mean": sum(r["vector_norm_mean"] for r in rs) / n,
            "real_norm_mean": rs[0]["real_norm_mean"],
            "control_correct": sum(r["control_correct"] for r in rs),
            "control_answer_nll": sum(r["control_answer_nll"] for r in rs) / n,
            "seconds": sum(r["seconds"] for r in rs) / n,
        })
    return rows


def table_md(rows: list[dict]) -> str:
    head = ("| reader | recall | 95% Wilson | answer NLL (sum; per token) | exact reconstruction | final loss | "
            "steps | vector norm (real) | control recall; NLL | s/trial |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    lines = [
        f"| {r['reader']} | {r['correct']}/{r['trials']} | {r['wilson'][0]:.2f}-{r['wilson'][1]:.2f} | "
        f"{r['answer_nll']:.2f}; {r['answer_nll_per_token']:.2f} | {r['reconstruction_exact']}/{r['trials']} | "
        f"{r['loss_final']:.4f} | {r['steps_run']:.0f} | {r['vector_norm_mean']:.1f} ({r['real_norm_mean']:.1f}) | "
        f"{r['control_correct']}/{r['trials']}; {r['control_answer_nll']:.2f} | {r['seconds']:.0f} |"
        for r in rows]
    return head + "\n".join(lines) + "\n"
