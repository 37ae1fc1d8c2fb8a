"""A typed model of the Grafana 11 dashboard JSON we need, and its rendering.

Boards are built from frozen dataclasses (:class:`Dashboard` of :class:`Row` of :class:`Panel`,
each panel with :class:`PromQL` or :class:`SQL` targets) and rendered with
:meth:`Dashboard.json`. The model holds what our boards vary; each panel kind's fixed options
come from the factory functions (:func:`timeseries`, :func:`stat`, :func:`table`,
:func:`bargauge`, :func:`state_timeline`, :func:`text`). Layout is automatic: a row spans the
grid, its panels flow left to right and wrap at 24 columns, and ids are numbered in order, so
no hand-kept ``gridPos`` or ``id`` can collide.

A panel's data source follows from its targets: PromQL queries go to the Prometheus data source,
SQL to TimescaleDB (the PostgreSQL plugin); both uids are fixed in :mod:`grafana.datasources`.

Examples
--------
>>> board = Dashboard(uid="demo", title="Demo", description="d", rows=(
...     Row("Throughput", (timeseries("Readings/s", "r", PromQL("sum(rate(vitals_readings_total[5m]))"),
...                                   unit="ops"),)),))
>>> doc = board.json()
>>> [(p["id"], p["type"], p["gridPos"]) for p in doc["panels"]]
[(1, 'row', {'h': 1, 'w': 24, 'x': 0, 'y': 0}), (2, 'timeseries', {'h': 8, 'w': 12, 'x': 0, 'y': 1})]
>>> doc["panels"][1]["targets"][0]["datasource"]["uid"]
'vitalrisk-prometheus'
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from grafana.datasources import PROMETHEUS, TIMESCALEDB, DataSourceRef

#: Columns of Grafana's dashboard grid.
GRID_WIDTH = 24
#: Dashboard JSON schema version of Grafana 11.0-11.2; Grafana 11.3 migrates it on load.
SCHEMA_VERSION = 39
#: Tag shared by every vitalrisk board; the board links list boards by it.
BOARD_TAG = "vitalrisk"

Json = dict[str, Any]
ThresholdsStyle = Literal["off", "line", "dashed", "area", "line+area", "dashed+area"]
SqlFormat = Literal["time_series", "table"]


@dataclass(frozen=True, slots=True)
class PromQL:
    """One PromQL query. ``legend`` uses Grafana's ``{{label}}`` syntax.

    ``instant`` asks for the current value only (tables, bar gauges); ``table`` returns a
    Prometheus result as a table (one row per series, labels as columns).
    """

    expr: str
    legend: str = "__auto"
    instant: bool = False
    table: bool = False

    datasource: ClassVar[DataSourceRef] = PROMETHEUS

    def json(self, ref_id: str) -> Json:
        """The query as a panel target."""
        return {"refId": ref_id, "datasource": self.datasource.json(), "editorMode": "code",
                "expr": self.expr, "legendFormat": self.legend, "range": not self.instant,
                "instant": self.instant, "format": "table" if self.table else "time_series"}


@dataclass(frozen=True, slots=True)
class SQL:
    """One SQL query for the TimescaleDB (PostgreSQL plugin) data source.

    Time series results need a ``time`` column and are sorted by it; a ``metric`` text column
    names the series. Use only SQL that plain PostgreSQL runs too (``date_bin``, Grafana's
    ``$__timeFilter``/``$__timeGroupAlias``/``$__timeFrom()``/``$__timeTo()`` macros).
    """

    sql: str
    format: SqlFormat = "time_series"

    datasource: ClassVar[DataSourceRef] = TIMESCALEDB

    def json(self, ref_id: str) -> Json:
        """The query as a panel target."""
        return {"refId": ref_id, "datasource": self.datasource.json(), "editorMode": "code",
                "rawQuery": True, "format": self.format, "rawSql": self.sql}


Target = PromQL | SQL


def sql(text: str, *, table: bool = False) -> SQL:
    """A SQL target from an indented triple-quoted literal; ``table`` for table results.

    >>> sql('''
    ...     SELECT 1
    ... ''', table=True)
    SQL(sql='SELECT 1', format='table')
    """
    return SQL(textwrap.dedent(text).strip(), "table" if table else "time_series")


def with_sql(ctes: Mapping[str, str], body: str, *, table: bool = False) -> SQL:
    """``WITH name AS (...), ... body``, each piece dedented on its own and laid out evenly.

    >>> print(with_sql({"latest": "  SELECT 1 AS x"}, "    SELECT x FROM latest").sql)
    WITH latest AS (
        SELECT 1 AS x
    )
    SELECT x FROM latest
    """
    parts = [f"{name} AS (\n{textwrap.indent(textwrap.dedent(cte).strip(), '    ')}\n)" for name, cte in ctes.items()]
    return sql("WITH " + ", ".join(parts) + "\n" + textwrap.dedent(body).strip(), table=table)


@dataclass(frozen=True, slots=True)
class Step:
    """A threshold step: from ``value`` upwards (``None``: the base step) the colour is ``color``."""

    color: str
    value: float | None = None

    def json(self) -> Json:
        return {"color": self.color, "value": self.value}


@dataclass(frozen=True, slots=True)
class Override:
    """Field config properties for the fields a matcher picks (``byName``, ``byRegexp``, ...)."""

    matcher: str
    name: str
    properties: Mapping[str, Any]

    def json(self) -> Json:
        return {"matcher": {"id": self.matcher, "options": self.name},
                "properties": [{"id": key, "value": value} for key, value in self.properties.items()]}


def by_name(name: str, **properties: Any) -> Override:
    """Override the fields named ``name``; property ids use ``__`` for dots.

    >>> by_name("risk", unit="percentunit", custom__width=80).json()["properties"]
    [{'id': 'unit', 'value': 'percentunit'}, {'id': 'custom.width', 'value': 80}]
    """
    return Override("byName", name, {key.replace("__", "."): value for key, value in properties.items()})


def value_text(mapping: Mapping[str, tuple[str, str]]) -> Json:
    """A value mapping: raw value -> (display text, colour).

    >>> value_text({"0": ("down", "red")})["options"]["0"]
    {'text': 'down', 'color': 'red', 'index': 0}
    """
    return {"type": "value", "options": {raw: {"text": text, "color": color, "index": i}
                                         for i, (raw, (text, color)) in enumerate(mapping.items())}}


def _merge(base: Json, extra: Mapping[str, Any]) -> Json:
    """``base`` updated by ``extra``, recursively for nested mappings (a new dict).

    >>> _merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4})
    {'a': {'b': 1, 'c': 3}, 'd': 4}
    """
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True, slots=True, kw_only=True)
class Panel:
    """One visualisation. Prefer the factories (:func:`timeseries`, :func:`stat`, ...)."""

    kind: str
    title: str
    description: str
    targets: tuple[Target, ...] = ()
    width: int = 12
    height: int = 8
    unit: str | None = None
    decimals: int | None = None
    min: float | None = None
    max: float | None = None
    thresholds: tuple[Step, ...] = ()
    mappings: tuple[Json, ...] = ()
    overrides: tuple[Override, ...] = ()
    color_mode: str | None = None
    custom: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    transformations: tuple[Json, ...] = ()
    links: tuple[Json, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.width <= GRID_WIDTH:
            raise ValueError(f"panel width must be 1..{GRID_WIDTH} columns, got {self.width} ({self.title!r})")
        if self.height < 1:
            raise ValueError(f"panel height must be at least 1, got {self.height} ({self.title!r})")
        if not self.description.strip():
            raise ValueError(f"every panel says what it answers: {self.title!r} has no description")
        sources = {target.datasource for target in self.targets}
        if len(sources) > 1:
            raise ValueError(f"panel {self.title!r} mixes data sources; split it")

    @property
    def datasource(self) -> DataSourceRef | None:
        """The data source of the panel's targets (``None`` for a text panel)."""
        return self.targets[0].datasource if self.targets else None

    def json(self, panel_id: int, x: int, y: int) -> Json:
        """The panel at grid position (``x``, ``y``)."""
        defaults: Json = {"mappings": list(self.mappings)}
        for key, value in (("unit", self.unit), ("decimals", self.decimals), ("min", self.min),
                           ("max", self.max)):
            if value is not None:
                defaults[key] = value
        if self.color_mode is not None:
            defaults["color"] = {"mode": self.color_mode}
        if self.thresholds:
            defaults["thresholds"] = {"mode": "absolute", "steps": [s.json() for s in self.thresholds]}
        if self.custom:
            defaults["custom"] = _merge({}, self.custom)
        panel: Json = {"id": panel_id, "type": self.kind, "title": self.title, "description": self.description,
                       "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y}}
        if self.datasource is not None:
            panel["datasource"] = self.datasource.json()
            panel["targets"] = [t.json(chr(ord("A") + i)) for i, t in enumerate(self.targets)]
            panel["fieldConfig"] = {"defaults": defaults, "overrides": [o.json() for o in self.overrides]}
        panel["options"] = _merge({}, self.options)
        if self.transformations:
            panel["transformations"] = list(self.transformations)
        if self.links:
            panel["links"] = list(self.links)
        return panel


_LEGEND = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
_TOOLTIP = {"mode": "multi", "sort": "desc"}
_REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def timeseries(title: str, description: str, *targets: Target, thresholds_style: ThresholdsStyle = "off",
               stacked: bool = False, bars: bool = False, steps: bool = False, legend_calcs: Sequence[str] = (),
               custom: Mapping[str, Any] | None = None, **fields: Any) -> Panel:
    """A time series graph; ``thresholds_style`` draws the thresholds on it ("marked").

    >>> p = timeseries("Lag", "lag", PromQL("x"), thresholds=(Step("green"), Step("red", 5)),
    ...                thresholds_style="dashed")
    >>> p.json(1, 0, 0)["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]
    {'mode': 'dashed'}
    """
    base: Json = {"drawStyle": "bars" if bars else "line", "lineInterpolation": "stepAfter" if steps else "linear",
                  "lineWidth": 1, "fillOpacity": 60 if bars else 10, "showPoints": "never", "spanNulls": False,
                  "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
                  "thresholdsStyle": {"mode": thresholds_style}}
    legend = _merge(_LEGEND, {"calcs": list(legend_calcs), "displayMode": "table" if legend_calcs else "list"})
    options = _merge({"legend": legend, "tooltip": _TOOLTIP}, fields.pop("options", {}))
    return Panel(kind="timeseries", title=title, description=description, targets=targets,
                 custom=_merge(base, custom or {}), options=options,
                 color_mode=fields.pop("color_mode", "palette-classic"), **fields)


def stat(title: str, description: str, *targets: Target, sparkline: bool = False, background: bool = False,
         calc: str = "lastNotNull", text_mode: str = "auto", **fields: Any) -> Panel:
    """A big number (the latest value by default), optionally with a sparkline of its trend."""
    options = {"reduceOptions": _merge(_REDUCE_LAST, {"calcs": [calc]}),
               "colorMode": "background" if background else "value", "graphMode": "area" if sparkline else "none",
               "justifyMode": "auto", "orientation": "auto", "textMode": text_mode, "wideLayout": True,
               "showPercentChange": False}
    return Panel(kind="stat", title=title, description=description, targets=targets,
                 options=_merge(options, fields.pop("options", {})),
                 color_mode=fields.pop("color_mode", "thresholds"), width=fields.pop("width", 6),
                 height=fields.pop("height", 4), **fields)


def table(title: str, description: str, *targets: Target, sort_by: str | None = None, descending: bool = True,
          **fields: Any) -> Panel:
    """A table; ``sort_by`` names the column sorted on first."""
    options: Json = {"showHeader": True, "cellHeight": "sm",
                     "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False}}
    if sort_by is not None:
        options["sortBy"] = [{"displayName": sort_by, "desc": descending}]
    custom = _merge({"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False, "filterable": True},
                    fields.pop("custom", {}))
    return Panel(kind="table", title=title, description=description, targets=targets, custom=custom,
                 options=_merge(options, fields.pop("options", {})),
                 color_mode=fields.pop("color_mode", "thresholds"), **fields)


def bargauge(title: str, description: str, *targets: Target, calc: str = "lastNotNull", **fields: Any) -> Panel:
    """Horizontal bars, one per series: compare the current value of groups (reasons, subgroups)."""
    options = {"reduceOptions": _merge(_REDUCE_LAST, {"calcs": [calc]}), "orientation": "horizontal",
               "displayMode": "gradient", "valueMode": "color", "namePlacement": "auto", "showUnfilled": True,
               "sizing": "auto", "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300}
    return Panel(kind="bargauge", title=title, description=description, targets=targets,
                 options=_merge(options, fields.pop("options", {})),
                 color_mode=fields.pop("color_mode", "thresholds"), **fields)


def state_timeline(title: str, description: str, *targets: Target, **fields: Any) -> Panel:
    """One band per series coloured by state over time (up/down, versions)."""
    options = {"mergeValues": True, "showValue": "auto", "alignValue": "left", "rowHeight": 0.9,
               "legend": _merge(_LEGEND, {"showLegend": False}), "tooltip": _TOOLTIP}
    return Panel(kind="state-timeline", title=title, description=description, targets=targets,
                 custom=_merge({"lineWidth": 0, "fillOpacity": 70}, fields.pop("custom", {})),
                 options=_merge(options, fields.pop("options", {})),
                 color_mode=fields.pop("color_mode", "thresholds"), **fields)


def text(title: str, markdown: str, **fields: Any) -> Panel:
    """A markdown note: how to read the board, what a threshold means."""
    return Panel(kind="text", title=title, description=fields.pop("description", title),
                 options={"mode": "markdown", "content": markdown,
                          "code": {"language": "plaintext", "showLineNumbers": False, "showMiniMap": False}},
                 **fields)


@dataclass(frozen=True, slots=True)
class Row:
    """A titled band of panels; panels flow left to right and wrap at the grid width."""

    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryVariable:
    """A dashboard variable whose values come from a query (``$name`` / ``${name:format}`` in queries).

    ``refresh`` 2 re-runs the query when the time range changes, 1 only on load. ``default`` is
    selected when the board opens, if the query offers it (else the first value is).
    """

    name: str
    label: str
    description: str
    query: str
    datasource: DataSourceRef
    refresh: Literal[1, 2] = 2
    sort: int = 1
    multi: bool = False
    include_all: bool = False
    default: str | None = None

    def json(self) -> Json:
        current = {} if self.default is None else {"selected": True, "text": self.default, "value": self.default}
        variable: Json = {
            "type": "query", "name": self.name, "label": self.label, "description": self.description,
            "datasource": self.datasource.json(), "query": self.query, "definition": self.query,
            "refresh": self.refresh, "sort": self.sort, "multi": self.multi, "includeAll": self.include_all,
            "current": current, "options": [], "hide": 0, "regex": "", "skipUrlSync": False}
        if self.include_all and self.datasource == PROMETHEUS:
            variable["allValue"] = ".*"  # a regex matcher, not Grafana's alternation of every value
        return variable


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlAnnotation:
    """Events from SQL: columns ``time``, optional ``timeend``, ``text`` and ``tags`` (comma-separated)."""

    name: str
    sql: str
    color: str

    datasource: ClassVar[DataSourceRef] = TIMESCALEDB

    def json(self) -> Json:
        return {"name": self.name, "datasource": self.datasource.json(), "enable": True, "hide": False,
                "iconColor": self.color, "target": SQL(self.sql, "table").json("Anno")}


@dataclass(frozen=True, slots=True, kw_only=True)
class PromAnnotation:
    """Events from PromQL: a marker wherever ``expr`` has a value (one ``step`` apart)."""

    name: str
    expr: str
    color: str
    title: str
    tag_keys: str = ""
    step: str = "1m"

    datasource: ClassVar[DataSourceRef] = PROMETHEUS

    def json(self) -> Json:
        return {"name": self.name, "datasource": self.datasource.json(), "enable": True, "hide": False,
                "iconColor": self.color, "expr": self.expr, "step": self.step, "titleFormat": self.title,
                "textFormat": "", "tagKeys": self.tag_keys, "useValueForTime": False,
                "target": {"refId": "Anno", "expr": self.expr, "interval": self.step}}


Annotation = SqlAnnotation | PromAnnotation

_BUILTIN_ANNOTATION: Json = {
    "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Dashboard:
    """A whole board; :meth:`json` lays it out and numbers its panels."""

    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = ()
    variables: tuple[QueryVariable, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    time_from: str = "now-6h"
    refresh: str = "1m"

    def layout(self) -> list[Json]:
        """Every row and panel as JSON, positioned on the grid, ids counting from 1."""
        panels: list[Json] = []
        y = 0
        for row in self.rows:
            panels.append({"id": len(panels) + 1, "type": "row", "title": row.title, "collapsed": False,
                           "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}, "panels": []})
            y += 1
            x, line_height = 0, 0
            for panel in row.panels:
                if x + panel.width > GRID_WIDTH:
                    x, y, line_height = 0, y + line_height, 0
                panels.append(panel.json(len(panels) + 1, x, y))
                x += panel.width
                line_height = max(line_height, panel.height)
            y += line_height
        return panels

    def json(self) -> Json:
        """The dashboard as Grafana 11 reads it from a provisioned file."""
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "id": None,
            "tags": [BOARD_TAG, *self.tags], "editable": False, "graphTooltip": 1, "liveNow": False,
            "fiscalYearStartMonth": 0, "weekStart": "", "timezone": "browser",
            "time": {"from": self.time_from, "to": "now"}, "timepicker": {}, "refresh": self.refresh,
            "schemaVersion": SCHEMA_VERSION, "version": 1,
            "links": [{"type": "dashboards", "title": "vitalrisk boards", "tags": [BOARD_TAG], "asDropdown": True,
                       "includeVars": False, "keepTime": True, "targetBlank": False, "icon": "external link",
                       "tooltip": "", "url": ""}],
            "annotations": {"list": [_BUILTIN_ANNOTATION, *(a.json() for a in self.annotations)]},
            "templating": {"list": [v.json() for v in self.variables]},
            "panels": self.layout(),
        }
