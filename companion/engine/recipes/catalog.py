"""The built-in recipes, each a writer and a reader under one name.

A new recipe is a `register(Recipe(...))` here (or in its own module imported
below) with a writer and reader from writers.py / readers.py or new ones.
"""

from __future__ import annotations

from .base import Recipe, register
from .fixed import mean_state
from .mapped import CHAT_WEIGHTS, MAPPED_WEIGHTS, QUIET_WEIGHTS, Mapped
from .readers import FramedReader, PrefixReader
from .retention import KEEP_WEIGHTS, Retained
from .trained import Anchored, fixed_builders
from .writers import ChunkMean, Select

register(Recipe("seed", "the seeds' recipe: 32 chunk means of engram+turn, scaled to the embedding norm, "
                "prepended to the prompt", ChunkMean(), PrefixReader(), supported=True,
                summary="chunk-mean, embedding-mean-norm, prepend-embeds"))
register(Recipe("sink", "seed without the attention sink: massive-activation positions left out before pooling; "
                "the template's first token stays first", ChunkMean(drop_sinks=True), PrefixReader(keep_first=True)))
register(Recipe("centred", "sink, and a mean layer-L state (from fixed neutral chat) subtracted; each slot scaled "
                "to the embedding norm", ChunkMean(drop_sinks=True, centred=True),
                PrefixReader(keep_first=True, scaling="per-slot"), fixed={"mean": mean_state}))
register(Recipe("framed", "seed's chunk means read inside the user message behind 'Earlier I told you:'",
                ChunkMean(), FramedReader()))
register(Recipe("deep", "sink's chunk means written back at layer L into slots after the first token "
                "(no rescaling)", ChunkMean(drop_sinks=True), PrefixReader(at_layer=True, keep_first=True)))
register(Recipe("deep-framed", "sink's chunk means written back at layer L into slots inside the user message",
                ChunkMean(drop_sinks=True), FramedReader(at_layer=True)))
# The selecting writer: the N most surprising token states, unaveraged; a full engram gives up at most
# 4 slots a turn, to new tokens more surprising than its weakest: without a cap one distractor turn
# replaced more than half of a fact's slots (a throwaway check; docs/HISTORY.md, "Recipes", has the
# measured recipes).
SELECT = Select(decay=1.0, per_turn=4)
register(Recipe("select-framed", "the 32 most surprising token states of engram+turn (at most 4 replaced a turn), "
                "read as input embeddings inside the user message", SELECT, FramedReader()))
register(Recipe("select-deep", "the 32 most surprising token states of engram+turn (at most 4 replaced a turn), "
                "written back at layer L inside the user message", SELECT, FramedReader(at_layer=True)))
register(Recipe("select-sticky", "the 32 most surprising token states of engram+turn, kept unaveraged; a full engram "
                "gives up at most 2 slots a turn; written back at layer L inside the user message (training-free)",
                Select(decay=1.0, per_turn=2), FramedReader(at_layer=True), supported=True))
register(Recipe("select-words", "select-sticky keeping words whole: a token's salience is its word's largest "
                "surprise, so a rare name's pieces stay or go together", Select(decay=1.0, per_turn=2, whole_words=True),
                FramedReader(at_layer=True)))
register(Recipe("select-context", "select-words where the two words before a rare one come in (and go) with it",
                Select(decay=1.0, per_turn=2, whole_words=True, context=2), FramedReader(at_layer=True)))
register(Recipe("select-fade", "select-words whose old slots lose 5% of their salience a turn, so a full engram "
                "keeps making room for new words", Select(decay=0.95, per_turn=2, whole_words=True),
                FramedReader(at_layer=True)))
# In the harness the replies are scripted, so the model finds them surprising ("Got it" after a fact),
# and under a per-turn cap those tokens took a fact turn's places; in a live chat the reply is the
# model's own and what needs keeping is what the user said.
register(Recipe("select-user", "select-words choosing new words only from the user's text, never from the reply",
                Select(decay=1.0, per_turn=2, whole_words=True, user_only=True), FramedReader(at_layer=True)))
register(Recipe("select-statements", "the user's text kept as whole statements: each turn offers its 16 tokens "
                "around the most surprising one, scored by that peak; a full engram gives up at most one "
                "statement a turn; written back at layer L inside the user message",
                Select(decay=1.0, per_turn=1, user_only=True, span=16), FramedReader(at_layer=True)))
# The trained writer (companion.engine.recipes.trained; trained by scripts/train_engram.py, the model frozen).
register(Recipe("select-trained", "select-sticky's token states re-weighted by a trained attention (the model "
                "frozen; shipped weights pinned by sha256), written back at layer L inside the user message",
                Anchored(), FramedReader(at_layer=True), fixed=fixed_builders()))
register(Recipe("select-trained-hard", "select-trained's weights, but each slot takes the one state its trained "
                "attention weights most (no mixture), written back at layer L inside the user message",
                Anchored(hard=True), FramedReader(at_layer=True), fixed=fixed_builders()))
# Recalls far more than select-sticky, but also says what it holds where it was not asked about
# (docs/HISTORY.md, "A trained map"), so it is opt-in, not the default.
register(Recipe("select-mapped", "select-sticky's token states, each kept whole and nudged by a trained low-rank "
                "map when it enters (the model frozen; shipped weights pinned by sha256), written back at layer L "
                "inside the user message; recalls most planted facts, but often repeats them unasked",
                Mapped(), FramedReader(at_layer=True), fixed=fixed_builders(MAPPED_WEIGHTS)))
register(Recipe("select-quiet", "select-mapped's kind of map, trained also to leave replies alone where the "
                "engram was not asked about (the model frozen; shipped weights pinned by sha256), written back at "
                "layer L inside the user message", Mapped(), FramedReader(at_layer=True),
                fixed=fixed_builders(QUIET_WEIGHTS)))
register(Recipe("select-chat", "select-sticky's token states, each nudged by a trained low-rank map when it enters: "
                "trained on planted facts, on turns that must not mention them and on real conversations' next "
                "turns (the model frozen; shipped weights pinned by sha256)", Mapped(), FramedReader(at_layer=True),
                fixed=fixed_builders(CHAT_WEIGHTS), supported=True))
# Learned retention (companion.engine.recipes.retention; trained by scripts/train_retention.py, the model
# frozen): what enters and what stays is a learned value of each state, not its age or surprise alone.
register(Recipe("select-keep", "whole words of the user's text kept by a learned value (a small scorer over each "
                "state, its neighbours and its surprise), no per-turn cap and no decay, each nudged by "
                "select-chat's map; written back at layer L inside the user message (the model frozen; shipped "
                "weights pinned by sha256)", Retained(), FramedReader(at_layer=True),
                fixed=fixed_builders(KEEP_WEIGHTS), supported=True))
