"""Measurement: the degradation harness, LoCoMo, the memory modes and the benchmarks.

modes: the memories compared (engram recipes and the controls: none, foreign,
transcript, retrieval); harness/: planted facts asked after k distractor turns;
locomo/: LoCoMo QA and next-utterance NLL; benchmarks: helpers for
scripts/bench_*.py, which time the product itself.

May import: companion.engine, companion.batched, companion.corpora,
companion.training (its dev facts) and companion.app (benchmarks time the
product), and memory_store. Nothing imports it but scripts and tests.
"""
