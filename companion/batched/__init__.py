"""Many sessions in one forward pass: the harnesses' and training's fast path.

Rows of several sessions padded into one batch (rows), answering and scoring
them together (batch), absorbing scripted turns without decoding (absorb), and
sharing a common prompt head once (prefix). The chat product never uses it.

May import: companion.engine.
"""
