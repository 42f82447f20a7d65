"""The engine: one turn of the engram recipe on a loaded model, with no I/O.

Model loading (loading), the chat template (chat_format), the engram math as
pure tensor functions (engram, residual), the recipe config (config) and the
recipes themselves (recipes/: writers and readers), prefill and decode (halves,
sampling), the turn cycle (cycle), and BM25 over text turns (retrieval).

May import: nothing else of companion, and not memory_store. Everything else
builds on it.
"""
