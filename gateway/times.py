"""Times of uploaded readings: RFC 3339 date-times with their offset, as the wire's epoch milliseconds.

A reading's time must say which instant it is: a date-time with seconds and a UTC offset (``Z`` or
``+hh:mm``). A date alone, a month, or a time without an offset (a phone's local clock, hours off
UTC) is refused rather than guessed. Fractions of a millisecond are dropped (times are floored to
the millisecond), and the instant must lie after 1970-01-01T00:00:00Z: the wire's times are
positive epoch milliseconds.

Examples
--------
>>> parse_rfc3339("2026-01-05T10:00:00.250+01:00")
datetime.datetime(2026, 1, 5, 10, 0, 0, 250000, tzinfo=datetime.timezone(datetime.timedelta(seconds=3600)))
>>> epoch_ms(parse_rfc3339("2026-01-05T09:00:00.250Z"))
1767603600250
>>> parse_rfc3339("2026-01-05T10:00:00") is None, parse_rfc3339("2026-01-05") is None
(True, True)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# RFC 3339 §5.6 date-time (the "T" and "Z" may be lower case).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def parse_rfc3339(text: object) -> datetime | None:
    """``text`` as an aware datetime if it is an RFC 3339 date-time with an offset, else ``None``.

    >>> parse_rfc3339("2026-01-05t10:00:00.123456789z").microsecond, parse_rfc3339("2026-02-30T10:00:00Z")
    (123456, None)
    """
    if type(text) is not str or _RFC3339.fullmatch(text) is None:
        return None
    try:
        return datetime.fromisoformat(text.upper())  # reads any number of fraction digits, keeps 6
    except ValueError:  # a day, hour or offset out of range: 2026-02-30, 24:00, a leap second
        return None


def epoch_ms(moment: datetime) -> int | None:
    """An aware datetime as positive epoch milliseconds (floored), or ``None`` if it is naive or not after 1970.

    >>> epoch_ms(datetime(1970, 1, 1, 0, 0, 0, 1500, tzinfo=UTC)), epoch_ms(datetime(2026, 1, 5))
    (1, None)
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None
    t = (moment - _EPOCH) // _MS
    return t if t > 0 else None
