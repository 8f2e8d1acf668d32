"""What the providers charge us, as data: the versioned price table (`provider_prices.toml`).

Pure apart from reading that one packaged file (`default_table`): `parse_table` turns its text
into immutable prices, checked on the way in (exact decimal strings, never floats; every figure a
model needs; versions in date order). Prices are USD per 1M tokens (`per_minute`: USD a minute).
The pricing itself is in `simplytalk.margin`.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from importlib import resources
from typing import Any

REALTIME_FIELDS = ("text_input", "cached_text_input", "audio_input", "cached_audio_input", "image_input",
                   "cached_image_input", "text_output", "audio_output")
TOKEN_TRANSCRIPTION_FIELDS = ("audio_input", "text_input", "text_output")
TABLE_FILE = "provider_prices.toml"


class PriceTableError(ValueError):
    """The price table is not usable as it stands (the message says where)."""


@dataclass(frozen=True)
class RealtimePrices:
    """A Realtime model: USD per 1M tokens."""

    text_input: Decimal
    cached_text_input: Decimal
    audio_input: Decimal
    cached_audio_input: Decimal
    image_input: Decimal
    cached_image_input: Decimal
    text_output: Decimal
    audio_output: Decimal
    source: str = ""


@dataclass(frozen=True)
class TranscriptionPrices:
    """A transcription model: USD per 1M tokens, and/or USD per minute of audio."""

    audio_input: Decimal | None = None
    text_input: Decimal | None = None
    text_output: Decimal | None = None
    per_minute: Decimal | None = None
    source: str = ""

    @property
    def by_tokens(self) -> bool:
        return None not in (self.audio_input, self.text_input, self.text_output)


@dataclass(frozen=True)
class PriceVersion:
    id: str
    effective_from: dt.date
    currency: str
    realtime: Mapping[str, RealtimePrices]
    transcription: Mapping[str, TranscriptionPrices]


@dataclass(frozen=True)
class PriceTable:
    versions: tuple[PriceVersion, ...]  # oldest first, dates strictly increasing

    def version_at(self, moment: dt.datetime) -> PriceVersion | None:
        """The version in force at `moment` (its UTC date), or None before the first one."""
        if moment.tzinfo is None:
            raise ValueError("price lookups need a timezone-aware time")
        day = moment.astimezone(dt.UTC).date()
        found = None
        for version in self.versions:
            if version.effective_from <= day:
                found = version
        return found


def _price(where: str, value: Any) -> Decimal:
    if not isinstance(value, str):
        raise PriceTableError(f"{where}: must be a decimal string such as \"4.00\" (got {value!r})")
    try:
        price = Decimal(value)
    except InvalidOperation as exc:
        raise PriceTableError(f"{where}: {value!r} is not a decimal number") from exc
    if not price.is_finite() or price < 0:
        raise PriceTableError(f"{where}: must be a non-negative number (got {value!r})")
    return price


def _date(where: str, value: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise PriceTableError(f"{where}: must be a date, YYYY-MM-DD (got {value!r})") from exc


def _realtime(where: str, data: Any) -> RealtimePrices:
    if not isinstance(data, dict):
        raise PriceTableError(f"{where}: must be a table")
    unknown = set(data) - {*REALTIME_FIELDS, "source"}
    if unknown:
        raise PriceTableError(f"{where}: unknown keys {sorted(unknown)}")
    missing = [f for f in REALTIME_FIELDS if f not in data]
    if missing:
        raise PriceTableError(f"{where}: missing {missing}")
    return RealtimePrices(**{f: _price(f"{where}.{f}", data[f]) for f in REALTIME_FIELDS},
                          source=str(data.get("source", "")))


def _transcription(where: str, data: Any) -> TranscriptionPrices:
    if not isinstance(data, dict):
        raise PriceTableError(f"{where}: must be a table")
    unknown = set(data) - {*TOKEN_TRANSCRIPTION_FIELDS, "per_minute", "source"}
    if unknown:
        raise PriceTableError(f"{where}: unknown keys {sorted(unknown)}")
    given = [f for f in TOKEN_TRANSCRIPTION_FIELDS if f in data]
    if given and len(given) != len(TOKEN_TRANSCRIPTION_FIELDS):
        raise PriceTableError(f"{where}: token prices need all of {list(TOKEN_TRANSCRIPTION_FIELDS)}")
    if not given and "per_minute" not in data:
        raise PriceTableError(f"{where}: needs token prices or per_minute")
    prices = {f: _price(f"{where}.{f}", data[f]) for f in (*given, *(["per_minute"] if "per_minute" in data else []))}
    per_minute = prices.get("per_minute")
    if per_minute is not None and not _exact_per_second(per_minute):
        raise PriceTableError(f"{where}.per_minute: {per_minute} a minute has no exact price a second "
                              "(give a figure divisible by 60 at its last decimal, e.g. 0.006)")
    return TranscriptionPrices(**prices, source=str(data.get("source", "")))


def _exact_per_second(per_minute: Decimal) -> bool:
    """Whether per_minute / 60 is a finite decimal, so durations price exactly."""
    value = Fraction(per_minute) / 60
    denominator = value.denominator
    for p in (2, 5):
        while denominator % p == 0:
            denominator //= p
    return denominator == 1


def parse_table(text: str) -> PriceTable:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"not valid TOML: {exc}") from exc
    raw_versions = doc.get("version")
    if not isinstance(raw_versions, list) or not raw_versions:
        raise PriceTableError("no [[version]] in the table")
    versions = []
    for i, raw in enumerate(raw_versions):
        where = f"version[{i}]"
        if not isinstance(raw.get("id"), str) or not raw["id"]:
            raise PriceTableError(f"{where}.id: must be a non-empty string")
        where = f"version {raw['id']}"
        currency = raw.get("currency", "usd")
        if currency != "usd":
            raise PriceTableError(f"{where}.currency: provider prices are in usd (got {currency!r})")
        realtime = raw.get("realtime") or {}
        transcription = raw.get("transcription") or {}
        if not isinstance(realtime, dict) or not isinstance(transcription, dict):
            raise PriceTableError(f"{where}: realtime and transcription must be tables of models")
        versions.append(PriceVersion(
            id=raw["id"], effective_from=_date(f"{where}.effective_from", raw.get("effective_from")),
            currency=currency,
            realtime={m: _realtime(f"{where}.realtime.{m}", p) for m, p in realtime.items()},
            transcription={m: _transcription(f"{where}.transcription.{m}", p) for m, p in transcription.items()}))
    ids = [v.id for v in versions]
    if len(set(ids)) != len(ids):
        raise PriceTableError(f"version ids must be unique: {ids}")
    dates = [v.effective_from for v in versions]
    if any(a >= b for a, b in itertools.pairwise(dates)):
        raise PriceTableError(f"versions must be in order of effective_from, each later than the last: {dates}")
    return PriceTable(tuple(versions))


@functools.cache
def default_table() -> PriceTable:
    """The table shipped with the library (read once per process)."""
    return parse_table(resources.files("simplytalk").joinpath(TABLE_FILE).read_text(encoding="utf-8"))
