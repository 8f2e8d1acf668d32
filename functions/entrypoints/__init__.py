"""Thin entry points: parse -> call the shared library -> serialize."""
