"""The one timestamp parser of the project: ISO-8601 strings (with or without an offset), datetimes and numbers
of seconds since the epoch, to UTC. A value without an offset is read as UTC, so a column that mixes
offset-aware and naive values parses; what cannot be read, or lies outside the nanosecond range pandas holds
(1677-09-21 to 2262-04-11), becomes NaT for the caller to report."""

from __future__ import annotations

from typing import Any

import pandas as pd

UTC_DTYPE = "datetime64[ns, UTC]"
RANGE = "pandas holds 1677-09-21 to 2262-04-11"


def parse_timestamps(values: Any) -> pd.Series:
    """UTC timestamps of `values` (a Series or sequence); unreadable or missing values are NaT."""
    s = pd.Series(values) if not isinstance(values, pd.Series) else values
    if pd.api.types.is_datetime64_any_dtype(s):
        out = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        return _in_range(out)
    if pd.api.types.is_numeric_dtype(s):
        seconds = pd.to_numeric(s, errors="coerce").astype(float)
        limit = pd.Timestamp.max.timestamp()
        seconds = seconds.where(seconds.abs() < limit)  # beyond pandas' range: NaT, reported by the caller
        return pd.to_datetime(seconds, unit="s", utc=True, errors="coerce").astype(UTC_DTYPE)
    # Element by element through pandas' ISO-8601 parser: mixed offsets and naive values each parse on their own.
    strings = s.astype("string").str.strip()
    try:
        parsed = pd.to_datetime(strings, utc=True, errors="coerce", format="ISO8601")
    except (pd.errors.OutOfBoundsDatetime, OverflowError):  # a year outside the range: per value below
        parsed = pd.Series(pd.NaT, index=s.index, dtype=UTC_DTYPE)
    if parsed.isna().sum() > strings.isna().sum():  # a mix pandas does not parse in one pass: per value
        parsed = pd.Series([_one(v) for v in strings.tolist()], index=s.index, dtype=UTC_DTYPE)
    return _in_range(parsed)


def _in_range(parsed: pd.Series) -> pd.Series:
    """As nanosecond UTC timestamps; those outside that range (pandas may parse them at a coarser unit) NaT."""
    lo, hi = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
    return parsed.where(parsed.isna() | ((parsed >= lo) & (parsed <= hi))).astype(UTC_DTYPE)


def _one(value: Any) -> pd.Timestamp:
    if value is None or value is pd.NA:
        return pd.NaT
    try:
        ts = pd.Timestamp(value)
        if ts is pd.NaT:
            return pd.NaT
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return ts.as_unit("ns")  # raises beyond the nanosecond range
    except (ValueError, TypeError, OverflowError):
        return pd.NaT
