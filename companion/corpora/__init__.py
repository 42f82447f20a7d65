"""The words the harnesses and training talk with: invented facts and real conversations.

facts: planted-fact generators (invented names, numbers, dates) that both the
harness's templates and training's own templates draw from; conversations:
LoCoMo and generated small talk as (user, reply) turns, the distractor pool.

May import: nothing else of companion (plain text and the standard library).
"""
