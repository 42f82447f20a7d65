"""The chat product: the service a turn goes through, the CLI, the REPL and the session verbs.

service: a named session's turn (engine + store, crash-safe); cli and
cli_args: the `companion` command; repl: the chat loop (it gets a callback
and knows no model); resume, fork, transfer, recall, views: the session verbs
and what they print; settings: where the data lives.

May import: companion.engine and memory_store. The REPL and CLI never touch
tensors or SQL: they go through service, fork, transfer and views.
"""
