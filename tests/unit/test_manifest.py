"""deploy.toml and functions/main.py describe the same functions."""

from __future__ import annotations

import ast

from devtools.manifest import ROOT, load

DECORATOR_SIGNATURE = {"http": "http", "cloud_event": "cloudevent"}


def _entry_points() -> dict[str, str]:
    tree = ast.parse((ROOT / "functions" / "main.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Attribute) and dec.attr in DECORATOR_SIGNATURE:
                    found[node.name] = DECORATOR_SIGNATURE[dec.attr]
    return found


def test_every_manifest_function_is_an_entry_point_of_the_right_kind() -> None:
    entry_points = _entry_points()

    for fn in load().functions:
        assert entry_points.get(fn.entry_point) == fn.signature_type, fn.name


def test_every_entry_point_is_deployed() -> None:
    deployed = {fn.entry_point for fn in load().functions}

    assert set(_entry_points()) == deployed


def test_names_are_unique() -> None:
    names = [fn.name for fn in load().functions]

    assert len(names) == len(set(names))
