"""Numbered, idempotent, resumable data migrations and their runner.

Each migration is a module `mNNN_name.py` with `NUMBER`, `NAME` and
`run(ctx: Context) -> None`. The runner (`python -m migrations`, `make migrate`)
records each in the ledger collection `migrations/{NNN}` (start, end, counts,
code version, checkpoint, bad data) and skips applied ones; a failed run keeps
its checkpoint and resumes from it.
"""
