"""What Grafana 11 does to a panel's SQL before PostgreSQL sees it, so tests can run the same SQL.

Two steps, as in Grafana:

1. The browser (``templateSrv.replace``) substitutes dashboard variables and the interval:
   ``$patient``, ``${patient}``, ``${patient:sqlstring}``, ``[[patient]]``, ``$__interval``,
   ``$__interval_ms``. Names it does not know, such as the macros below, stay as they are.
2. The PostgreSQL data source (``pkg/tsdb/grafana-postgresql-datasource``, ``macros.go``)
   expands its macros, matched by ``\\$(\\w+)\\(([^)]*)\\)``: ``$__timeFilter(col)`` becomes
   ``col BETWEEN '<from>' AND '<to>'`` (RFC 3339, nanosecond precision, trailing zeros
   dropped), ``$__timeFrom()``/``$__timeTo()`` the quoted bounds, and
   ``$__timeGroupAlias(col, 1m)`` ``time_bucket('60.000s',col) AS "time"`` on a data source with
   ``timescaledb: true`` but ``floor(extract(epoch from col)/60)*60 AS "time"`` without it.

Examples
--------
>>> from datetime import datetime, timezone
>>> rng = TimeRange(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 5, 0, 30, tzinfo=UTC))
>>> q = "SELECT $__timeGroupAlias(t, $__interval), 1 FROM x WHERE $__timeFilter(t) AND p = ${p:sqlstring}"
>>> print(expand(q, rng, interval="1m", variables={"p": "pt-1"}, timescaledb=False))
SELECT floor(extract(epoch from t)/60)*60 AS "time", 1 FROM x WHERE t BETWEEN '2026-01-05T00:00:00Z' AND '2026-01-05T00:30:00Z' AND p = 'pt-1'
>>> print(expand("SELECT $__timeGroupAlias(t, 5m)", rng, interval="1m", variables={}, timescaledb=True))
SELECT time_bucket('300.000s',t) AS "time"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from decimal import Decimal


class GrafanaSqlError(ValueError):
    """A query Grafana would refuse: an unknown macro or variable, a bad interval."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The dashboard's time range (timezone-aware)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("time range bounds must be timezone-aware")
        if self.end < self.start:
            raise ValueError(f"time range ends before it starts: {self.start} > {self.end}")


def rfc3339nano(moment: datetime) -> str:
    """Go's ``t.UTC().Format(time.RFC3339Nano)``: fraction without trailing zeros, ``Z``.

    >>> rfc3339nano(datetime(1960, 2, 1, 7, 0, 0, 500000, tzinfo=UTC))
    '1960-02-01T07:00:00.5Z'
    >>> rfc3339nano(datetime(2018, 4, 12, 18, 0, tzinfo=UTC))
    '2018-04-12T18:00:00Z'
    """
    utc = moment.astimezone(UTC)
    fraction = f"{utc.microsecond:06d}".rstrip("0")
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def go_float(value: float) -> str:
    """Go's ``fmt.Sprintf("%v", value)`` for a float64, which Grafana uses for bucket widths.

    ``%v`` is ``%g`` with the shortest digits, and switches to an exponent when the decimal
    exponent is below -4 or at least 6 (the famous ``1.0368e+06`` of a 12-day bucket).

    >>> [go_float(v) for v in (60.0, 300.0, 0.5, 86400.0, 1036800.0, 0.00001)]
    ['60', '300', '0.5', '86400', '1.0368e+06', '1e-05']
    """
    if value == 0:
        return "0"
    sign, digits, raw_exponent = Decimal(repr(float(value))).normalize().as_tuple()
    exponent = int(raw_exponent)
    text = "".join(map(str, digits))
    decimal_exponent = len(digits) + exponent - 1
    prefix = "-" if sign else ""
    if decimal_exponent < -4 or decimal_exponent >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if decimal_exponent < 0 else '+'}{abs(decimal_exponent):02d}"
    if exponent >= 0:
        return prefix + text + "0" * exponent
    point = len(text) + exponent  # digits before the decimal point (<= 0: leading zeros after it)
    if point > 0:
        return f"{prefix}{text[:point]}.{text[point:]}"
    return f"{prefix}0.{'0' * -point}{text}"


_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DATE_UNIT = re.compile(r"^(\d+)([dw])$")


def parse_interval(text: str) -> timedelta:
    """Grafana's ``gtime.ParseInterval``: ``1d``/``2w`` as days, else a Go duration (``1m30s``).

    >>> parse_interval("1m"), parse_interval("'5m'"), parse_interval("1d"), parse_interval("250ms")
    (datetime.timedelta(seconds=60), datetime.timedelta(seconds=300), datetime.timedelta(days=1), datetime.timedelta(microseconds=250000))
    """
    raw = text.strip().strip("'")
    date = _DATE_UNIT.match(raw)
    if date:
        return timedelta(days=int(date.group(1)) * (7 if date.group(2) == "w" else 1))
    position, seconds = 0, 0.0
    for match in _GO_DURATION_PART.finditer(raw):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _GO_UNIT_S[match.group(2)]
        position = match.end()
    if not raw or position != len(raw):
        raise GrafanaSqlError(f"error parsing interval {text}")
    return timedelta(seconds=seconds)


#: templateSrv's variable syntaxes: $name, [[name(:fmt)]], ${name(.path)(:fmt)}.
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
#: The data source's macros: $name(args), args without a closing parenthesis.
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


def _format(value: str, fmt: str | None) -> str:
    """One single-valued variable in a format (``None``: the SQL data source's default)."""
    if fmt is None or fmt == "raw":
        return value  # Grafana 11.3 inserts a single-valued SQL variable as is
    if fmt == "sqlstring":
        return "'" + value.replace("'", "''") + "'"
    if fmt == "singlequote":
        return "'" + value.replace("'", "\\'") + "'"
    raise GrafanaSqlError(f"variable format {fmt!r} is not emulated")


def interpolate_variables(sql: str, variables: Mapping[str, str], *, interval: str) -> str:
    """Step 1, in the browser: dashboard variables and ``$__interval(_ms)``.

    >>> interpolate_variables("a = ${p:sqlstring} AND b = $m AND c = [[m]] AND $__timeFilter(t)",
    ...                       {"p": "o'k", "m": "news2"}, interval="1m")
    "a = 'o''k' AND b = news2 AND c = news2 AND $__timeFilter(t)"
    """
    scoped = {"__interval": interval,
              "__interval_ms": str(int(parse_interval(interval) / timedelta(milliseconds=1)))}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if match.group(5):
            raise GrafanaSqlError(f"variable field paths are not emulated: {match.group(0)}")
        if name in scoped:
            return scoped[name]
        if name in variables:
            return _format(variables[name], fmt)
        if name.startswith("__"):
            return match.group(0)  # a macro or a built-in the data source expands
        raise GrafanaSqlError(f"undefined dashboard variable ${name}")

    return _VARIABLE.sub(replace, sql)


def _macro(name: str, args: list[str], time_range: TimeRange, *, timescaledb: bool) -> str:
    """``evaluateMacro`` of Grafana's PostgreSQL data source."""
    start, end = rfc3339nano(time_range.start), rfc3339nano(time_range.end)
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{start}' AND '{end}'"
    if name == "__timeFrom":
        return f"'{start}'"
    if name == "__timeTo":
        return f"'{end}'"
    if name in ("__timeGroup", "__timeGroupAlias"):
        if len(args) < 2:
            raise GrafanaSqlError(f"macro {name} needs time column and interval and optional fill value")
        if len(args) == 3:
            raise GrafanaSqlError("fill modes change the result frames and are not emulated")
        seconds = parse_interval(args[1]).total_seconds()
        if timescaledb:
            group = f"time_bucket('{seconds:.3f}s',{args[0]})"
        else:
            group = f"floor(extract(epoch from {args[0]})/{go_float(seconds)})*{go_float(seconds)}"
        return group + (' AS "time"' if name == "__timeGroupAlias" else "")
    if name == "__unixEpochFilter":
        lo, hi = int(time_range.start.timestamp()), int(time_range.end.timestamp())
        return f"{args[0]} >= {lo} AND {args[0]} <= {hi}"
    raise GrafanaSqlError(f'unknown macro "{name}"')


def expand_macros(sql: str, time_range: TimeRange, *, timescaledb: bool) -> str:
    """Step 2, in the data source: the macros (each match replaced in one pass, as Go does).

    >>> rng = TimeRange(datetime(2018, 4, 12, 18, tzinfo=UTC), datetime(2018, 4, 12, 18, 5, tzinfo=UTC))
    >>> expand_macros("SELECT $__timeGroup(time_column,'5m'), value", rng, timescaledb=False)
    'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value'
    >>> expand_macros("GROUP BY $__timeGroup(time_column , '20ms')", rng, timescaledb=True)
    "GROUP BY time_bucket('0.020s',time_column)"
    >>> expand_macros("select $__timeTo()", rng, timescaledb=False)
    "select '2018-04-12T18:05:00Z'"
    """
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "__timeGroup":
            # pre-5.3 compatibility: `$__timeGroup(...)` directly followed by ',' gets AS "time"
            # (Grafana looks at the first occurrence of the same text)
            index = sql.find(match.group(0)) + len(match.group(0))
            if index < len(sql) and sql[index] == ",":
                name = "__timeGroupAlias"
        args = [arg.strip(" ") for arg in match.group(2).split(",")]
        return _macro(name, args, time_range, timescaledb=timescaledb)

    return _MACRO.sub(replace, sql)


def expand(sql: str, time_range: TimeRange, *, interval: str, variables: Mapping[str, str],
           timescaledb: bool) -> str:
    """Both steps: the SQL the PostgreSQL server receives from Grafana."""
    return expand_macros(interpolate_variables(sql, variables, interval=interval), time_range,
                         timescaledb=timescaledb)
