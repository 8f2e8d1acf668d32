"""Repositories: each owns one aggregate's documents (paths, codecs, precondition retries),
with an in-memory fake beside it for tests that need no emulator."""
