"""Reading date/datetime bounds and IANA timezones from query parameters into UTC instants."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def resolve_timezone(name: str | None) -> ZoneInfo:
    """An IANA zone (default UTC); ValueError naming the value when it is unknown."""
    if name is None or name == "":
        return ZoneInfo("UTC")
    if len(name) > 64 or ".." in name or name.startswith("/"):
        raise ValueError(f"unknown timezone {name!r}: use an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}: use an IANA name such as Europe/Berlin") from None


def parse_bound(value: str, tz: ZoneInfo, *, is_end: bool) -> datetime:
    """A startDate/endDate value → an aware instant.

    A date starts at local midnight; a date end bound includes that whole day (so it becomes the next midnight).
    A datetime without an offset is read in tz; a datetime end bound is exclusive as given.
    """
    text = value.strip()
    if _DATE_RE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a real date (YYYY-MM-DD)") from None
        if is_end:
            day = day + timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=tz)
    if len(text) < 11 or len(text) > 40:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 datetime")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 datetime") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value!r} is out of range") from None
    return moment


def to_epoch_ms(moment: datetime) -> int:
    return (moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def parse_range(start_raw: str | None, end_raw: str | None, tz: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """startDate/endDate → [start, end); ValueError("<param>: why") for a bad value or a start after the end.

    A date end includes its whole day, so with a date end the start must come before that day's end; two equal
    datetimes are an empty range, not an error.
    """
    start = end = None
    if start_raw is not None:
        try:
            start = parse_bound(start_raw, tz, is_end=False)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"startDate: {exc}") from None
    if end_raw is not None:
        try:
            end = parse_bound(end_raw, tz, is_end=True)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"endDate: {exc}") from None
    if start is not None and end is not None:
        end_is_date = bool(_DATE_RE.fullmatch(end_raw.strip())) if end_raw else False
        if start > end or (end_is_date and start >= end):
            raise ValueError("startDate: is after endDate; the range's start must not be after its end")
    return start, end
