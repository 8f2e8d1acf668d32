"""Input checked against a pydantic model: the caller's mistakes as `InvalidInput`, each field
named (used by the HTTP layer and by the operator CLIs alike)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from simplytalk.errors import FieldViolation, InvalidInput

M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input_from(exc) from exc


def invalid_input_from(exc: ValidationError) -> InvalidInput:
    details = [
        FieldViolation(
            field=".".join(str(p) for p in err["loc"]) or "body",
            description=_describe(err),
        )
        for err in exc.errors(include_url=False)
    ]
    summary = "; ".join(f"{d.field}: {d.description}" for d in details)
    return InvalidInput(summary or "invalid request", details)


def _describe(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    message = str(err["msg"])
    return message.removeprefix("Value error, ")
