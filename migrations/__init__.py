"""Numbered, idempotent, resumable data migrations and their runner (issue 6)."""
