"""Operator command-line tools that run against a project (the emulators or a real one)."""
