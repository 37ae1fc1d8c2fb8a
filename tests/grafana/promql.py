"""PromQL as Grafana sends it, and the metric names an expression reads.

Grafana replaces its interval variables and dashboard variables before Prometheus parses a
query; :func:`interpolate` does the same with fixed values so that ``promtool`` can check the
result. :func:`metric_names` lists the series names an expression selects, to compare with the
catalogue in :mod:`sinks.metrics`, and :func:`label_names` the labels it matches or groups on.

Examples
--------
>>> expr = 'histogram_quantile(0.99, sum by (le) (rate(vitals_scoring_seconds_bucket{model=~"$model"}[$__rate_interval])))'
>>> interpolate(expr, {"model": ".*"})
'histogram_quantile(0.99, sum by (le) (rate(vitals_scoring_seconds_bucket{model=~".*"}[1m])))'
>>> sorted(metric_names(expr))
['vitals_scoring_seconds_bucket']
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Values for Grafana's built-in variables in a PromQL query (any valid durations do).
BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__interval_ms": "60000",
            "__range_s": "3600", "__range_ms": "3600000"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "by", "without", "on", "ignoring",
             "group_left", "group_right", "start", "end"}
#: ``label_values(<selector>, <label>)``: Grafana's variable query for label values.
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$")


def interpolate(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` with Grafana's built-ins and the given dashboard variables replaced.

    >>> interpolate("rate(x[$__range]) * ${k}", {"k": "2"})
    'rate(x[1h]) * 2'
    """
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in variables:
            return variables[name]
        if name in BUILTINS:
            return BUILTINS[name]
        raise KeyError(f"undefined variable ${name} in {expr!r}")

    return _VARIABLE.sub(replace, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels and durations left out).

    >>> sorted(metric_names('sum by (job) (rate(a_total[5m])) / ignoring (x) b > 1e3 unless on (job) up{job="w"} offset 5m'))
    ['a_total', 'b', 'up']
    >>> sorted(metric_names('absent(up{job="w"} == 1) and {__name__="ignored"}'))
    ['up']
    >>> sorted(metric_names('job:vitals_readings:rate1m > 0'))
    ['job:vitals_readings:rate1m']
    """
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {match.group(1) for match in _IDENTIFIER.finditer(text)
            if match.group(2) is None and match.group(1).lower() not in _KEYWORDS}


def label_names(expr: str) -> set[str]:
    """Label names an expression matches on (``{label="..."}``) or groups by (``by``, ``on``, ...).

    >>> sorted(label_names('sum by (route) (rate(a_total{status=~"5..", route!="/m,{x}"}[5m])) / on (job) b'))
    ['job', 'route', 'status']
    >>> sorted(label_names('histogram_quantile(0.5, sum by (le) (rate(h_bucket[1m])))'))
    ['le']
    """
    text = _STRING.sub('""', expr)
    found = {name for block in _MATCHERS.findall(text) for name in _MATCHER_LABEL.findall(block)}
    found |= {name.strip() for names in _LABEL_LIST.findall(text) for name in names.split(",") if name.strip()}
    return found - {"__name__"}
