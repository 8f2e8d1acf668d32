"""The billing period: a calendar month in UTC, the one unit usage is counted, priced and invoiced by.

Stored and sent as "YYYY-MM" (a map key in the counters and the ledger, a query parameter);
`Period` is that string's meaning, in one place. Pure."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Period:
    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1970 <= self.year <= 9999 or not 1 <= self.month <= 12:
            raise ValueError(f"not a billing period: {self.year}-{self.month}")

    @classmethod
    def parse(cls, text: str) -> Period:
        """From "YYYY-MM" (ASCII digits only, from 1970-01); ValueError for anything else."""
        if len(text) != 7 or text[4] != "-" or not text.isascii() or not (text[:4] + text[5:]).isdigit():
            raise ValueError(f"not YYYY-MM: {text!r}")
        return cls(int(text[:4]), int(text[5:]))

    @classmethod
    def is_valid(cls, text: str) -> bool:
        try:
            cls.parse(text)
        except ValueError:
            return False
        return True

    @classmethod
    def of(cls, moment: dt.datetime) -> Period:
        """The period a moment falls in (UTC); the moment must carry its time zone."""
        if moment.tzinfo is None:
            raise ValueError("billing times must be timezone-aware")
        utc = moment.astimezone(dt.UTC)
        return cls(utc.year, utc.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    @property
    def year_key(self) -> str:
        """"YYYY": the year documents (counters, ledger) this period is filed under."""
        return f"{self.year:04d}"

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)
