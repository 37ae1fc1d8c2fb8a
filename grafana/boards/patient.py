"""The Patient board: one patient's vitals, how they differ from the patient's own baseline, and
their risk and NEWS2 over time, with alerts and outcomes marked.

Pick the patient with ``$patient`` (highest current risk first) and the scorer with ``$model``.
The coloured bands behind each vital are the NEWS2 chart's zones (0 points green, 1 yellow,
2 orange, 3 red). Until the feature engine stores a personal baseline, the baseline is a rolling
mean of the patient's own window means over the previous :data:`BASELINE` (computed in SQL).

Examples
--------
>>> board = patient_board()
>>> [v.name for v in board.variables]
['patient', 'model']
"""

from __future__ import annotations

from kernel.vocabulary import METRICS

from grafana.boards.clinical import (NEWS2_TOTAL_STEPS, RISK_STEPS, VITALS, grafana_unit, model_variable,
                                     vital_zones)
from grafana.dashboard import (Dashboard, Panel, QueryVariable, Row, SqlAnnotation, Step, by_name, sql, stat,
                               table, timeseries, with_sql)
from grafana.datasources import TIMESCALEDB

#: Look-back of the rolling personal baseline (a PostgreSQL interval literal).
BASELINE = "24 hours"
#: Fewer earlier windows than this and the baseline is not shown (too noisy to compare against).
MIN_BASELINE_WINDOWS = 5
PATIENT = "${patient:sqlstring}"
MODEL = "${model:sqlstring}"
#: Title of each vital's panel.
TITLES = {"heart_rate": "Heart rate", "respiratory_rate": "Respiratory rate",
          "oxygen_saturation": "SpO2", "body_temperature": "Temperature",
          "systolic_blood_pressure": "Systolic blood pressure", "diastolic_blood_pressure": "Diastolic blood pressure",
          "step_count": "Steps"}


def _baseline_cte(metrics: tuple[str, ...]) -> str:
    """Window rows of the patient's ``metrics`` with the rolling baseline mean, SD and count.

    Reads :data:`BASELINE` before the range so the first windows in the range have a baseline.
    The current window is excluded from its own baseline.
    """
    names = ", ".join(f"'{m}'" for m in metrics)
    return f"""
        SELECT metric, window_start, n, mean, min, max,
               avg(mean) OVER baseline AS baseline_mean,
               stddev_samp(mean) OVER baseline AS baseline_sd,
               count(*) OVER baseline AS baseline_windows
        FROM features
        WHERE patient_id = {PATIENT}
          AND metric IN ({names})
          AND window_start BETWEEN $__timeFrom()::timestamptz - INTERVAL '{BASELINE}' AND $__timeTo()::timestamptz
        WINDOW baseline AS (PARTITION BY metric ORDER BY window_start
                            RANGE BETWEEN INTERVAL '{BASELINE}' PRECEDING AND CURRENT ROW EXCLUDE CURRENT ROW)"""


def _readings_per_metric() -> str:
    """Select-list: readings received per metric, one column per vocabulary metric.

    >>> print(_readings_per_metric().splitlines()[0])
    coalesce(sum(n) FILTER (WHERE metric = 'heart_rate'), 0) AS "Heart rate",
    """
    return ",\n                        ".join(
        f"coalesce(sum(n) FILTER (WHERE metric = '{m}'), 0) AS \"{TITLES[m]}\"" for m in METRICS)


def _vital(metric: str) -> Panel:
    """Mean, min-max band and baseline of one vital, over its NEWS2 zones."""
    unit = METRICS[metric].unit
    zones = vital_zones(metric)
    what = ("The coloured background is the NEWS2 chart: green scores 0, yellow 1, orange 2, red 3."
            if zones else "NEWS2 does not score this vital.")
    return timeseries(
        TITLES[metric],
        f"{TITLES[metric]} ({unit}) per interval: mean of the window means (weighted by readings), the "
        f"lowest and highest single reading (shaded), and the patient's baseline (dashed, mean of the "
        f"previous {BASELINE}). {what}",
        with_sql({"w": _baseline_cte((metric,))}, f"""
            SELECT $__timeGroupAlias(window_start, $__interval),
                   sum(n * mean) / sum(n) AS "mean",
                   min(min) AS "min",
                   max(max) AS "max",
                   avg(baseline_mean) FILTER (WHERE baseline_windows >= {MIN_BASELINE_WINDOWS}) AS "baseline"
            FROM w
            WHERE $__timeFilter(window_start)
            GROUP BY 1
            ORDER BY 1"""),
        unit=grafana_unit(metric), width=8, thresholds=zones or (Step("text"),),
        thresholds_style="area" if zones else "off", color_mode="fixed", custom={"spanNulls": 180_000},
        overrides=(
            by_name("mean", color={"mode": "fixed", "fixedColor": "text"}, custom__lineWidth=2),
            by_name("max", custom__fillBelowTo="min", custom__lineWidth=0, custom__fillOpacity=20,
                    color={"mode": "fixed", "fixedColor": "blue"}, custom__hideFrom={
                        "legend": True, "tooltip": False, "viz": False}),
            by_name("min", custom__lineWidth=0, color={"mode": "fixed", "fixedColor": "blue"},
                    custom__hideFrom={"legend": True, "tooltip": False, "viz": False}),
            by_name("baseline", color={"mode": "fixed", "fixedColor": "purple"},
                    custom__lineStyle={"fill": "dash", "dash": [10, 10]}),
        ))


def patient_board() -> Dashboard:
    """Vitals, baseline deviation, risk and NEWS2 over time for ``$patient``."""
    now = Row("Now", (
        stat("Latest NEWS2", "NEWS2 total of the patient's latest scored window, and its trend.",
             sql(f"""
                 SELECT $__timeGroupAlias(window_start, $__interval), max(news2_total) AS "NEWS2"
                 FROM risk_scores
                 WHERE patient_id = {PATIENT} AND model_name = {MODEL} AND $__timeFilter(window_start)
                 GROUP BY 1
                 ORDER BY 1"""),
             sparkline=True, background=True, decimals=0, thresholds=NEWS2_TOTAL_STEPS, width=5, height=6),
        stat("Latest risk", "The selected model's risk score for the latest window, and its trend.",
             sql(f"""
                 SELECT $__timeGroupAlias(window_start, $__interval), max(score) AS "risk"
                 FROM risk_scores
                 WHERE patient_id = {PATIENT} AND model_name = {MODEL} AND $__timeFilter(window_start)
                 GROUP BY 1
                 ORDER BY 1"""),
             sparkline=True, background=True, unit="percentunit", decimals=0, thresholds=RISK_STEPS,
             width=5, height=6),
        table("Why: the latest score's inputs and points", "Each vital's value used by the latest score "
              "(a window mean, or carried forward up to 12 h) and the NEWS2 points it earned. Vitals "
              "with no recent measurement are listed as not measured: they scored 0.",
              sql(f"""
                  WITH latest AS (
                      SELECT inputs, contributions, missing_inputs
                      FROM risk_scores
                      WHERE patient_id = {PATIENT} AND model_name = {MODEL} AND $__timeFilter(window_start)
                      ORDER BY window_start DESC
                      LIMIT 1
                  ), vitals AS (
                      SELECT key FROM latest, jsonb_object_keys(latest.inputs) AS key
                      UNION
                      SELECT key FROM latest, jsonb_object_keys(latest.contributions) AS key
                      UNION
                      SELECT key FROM latest, unnest(latest.missing_inputs) AS key
                  )
                  SELECT vitals.key AS "vital",
                         round((latest.inputs ->> vitals.key)::numeric, 1) AS "value used",
                         coalesce((latest.contributions ->> vitals.key)::numeric, 0) AS "points"
                  FROM latest CROSS JOIN vitals
                  ORDER BY 3 DESC, 1""", table=True),
              width=8, height=6,
              overrides=(by_name("points", custom__cellOptions={"type": "color-background", "mode": "basic"},
                                 thresholds={"mode": "absolute", "steps": [
                                     {"color": "green", "value": None}, {"color": "yellow", "value": 1},
                                     {"color": "orange", "value": 2}, {"color": "red", "value": 3}]}),
                         by_name("value used", noValue="not measured"))),
        stat("Readings in range", "Readings received per vital in the range: a vital with few readings "
             "is poorly measured (device off the wrist, cuff not used).",
             sql(f"""
                 SELECT {_readings_per_metric()}
                 FROM features
                 WHERE patient_id = {PATIENT} AND $__timeFilter(window_start)""", table=True),
             text_mode="value_and_name", decimals=0, thresholds=(Step("blue"),), width=6, height=6),
    ))
    vitals = Row("Vitals", tuple(_vital(m) for m in (*VITALS, "diastolic_blood_pressure")))
    baseline = Row("Against the personal baseline", (
        timeseries("Deviation from personal baseline", "How many standard deviations each vital's mean is "
                   f"from the patient's own baseline (mean and SD of their previous {BASELINE} of windows). "
                   "Beyond ±2 (dashed) is unusual for this patient even if NEWS2 scores it normal.",
                   with_sql({"w": _baseline_cte(VITALS)}, f"""
                       SELECT $__timeGroupAlias(window_start, $__interval),
                              metric,
                              avg((mean - baseline_mean) / nullif(baseline_sd, 0)) AS "SD from baseline"
                       FROM w
                       WHERE $__timeFilter(window_start) AND baseline_windows >= {MIN_BASELINE_WINDOWS}
                       GROUP BY 1, 2
                       ORDER BY 1"""),
                   unit="none", decimals=1, width=16,
                   thresholds=(Step("red"), Step("transparent", -2), Step("red", 2)), thresholds_style="dashed"),
        timeseries("Steps per minute", "Activity from the wrist device (mean steps per minute): context for "
                   "a raised heart or respiratory rate.",
                   sql(f"""
                       SELECT $__timeGroupAlias(window_start, $__interval), sum(n * mean) / sum(n) AS "steps"
                       FROM features
                       WHERE patient_id = {PATIENT} AND metric = 'step_count' AND $__timeFilter(window_start)
                       GROUP BY 1
                       ORDER BY 1"""),
                   bars=True, unit="short", min=0, width=8),
    ))
    risk = Row("Risk and NEWS2 over time", (
        timeseries("NEWS2 total", "NEWS2 per interval (highest window). Orange from 5 (urgent review), red "
                   "from 7 (emergency response).",
                   sql(f"""
                       SELECT $__timeGroupAlias(window_start, $__interval), max(news2_total) AS "NEWS2"
                       FROM risk_scores
                       WHERE patient_id = {PATIENT} AND model_name = {MODEL} AND $__timeFilter(window_start)
                       GROUP BY 1
                       ORDER BY 1"""),
                   steps=True, min=0, decimals=0, width=8, thresholds=NEWS2_TOTAL_STEPS,
                   thresholds_style="area"),
        timeseries("Risk score by model", "Every scorer's risk for this patient (NEWS2 appears as its total "
                   "divided by 20), so a learned model can be compared with NEWS2.",
                   sql(f"""
                       SELECT $__timeGroupAlias(window_start, $__interval), model_name AS metric, max(score) AS "risk"
                       FROM risk_scores
                       WHERE patient_id = {PATIENT} AND $__timeFilter(window_start)
                       GROUP BY 1, 2
                       ORDER BY 1"""),
                   unit="percentunit", min=0, width=8, thresholds=RISK_STEPS, thresholds_style="dashed"),
        timeseries("NEWS2 points by vital", "Which vitals earn the NEWS2 points (stacked): the score's "
                   "drivers over time.",
                   sql(f"""
                       SELECT $__timeGroupAlias(r.window_start, $__interval),
                              c.key AS metric,
                              max(c.value::double precision) AS "points"
                       FROM risk_scores AS r
                       CROSS JOIN LATERAL jsonb_each_text(r.contributions) AS c
                       WHERE r.patient_id = {PATIENT} AND r.model_name = {MODEL} AND $__timeFilter(r.window_start)
                       GROUP BY 1, 2
                       ORDER BY 1"""),
                   bars=True, stacked=True, min=0, decimals=0, width=8),
    ))
    variables = (
        QueryVariable(
            name="patient", label="Patient", datasource=TIMESCALEDB, sort=0,
            description="Pseudonymous patient id; highest risk in the range first.",
            query="SELECT patient_id FROM risk_scores WHERE $__timeFilter(window_start) "
                  "GROUP BY patient_id ORDER BY max(score) DESC, patient_id LIMIT 500"),
        model_variable(),
    )
    annotations = (
        SqlAnnotation(
            name="Alerts", color="red",
            sql=f"""SELECT coalesce(fired_at, started_at) AS "time",
       resolved_at AS "timeend",
       kind || ' (' || severity || ', ' || state || ')'
           || coalesce(', acknowledged by ' || acknowledged_by, '') AS "text",
       'alert,' || kind || ',' || severity AS "tags"
FROM alerts
WHERE patient_id = {PATIENT}
  AND fired_at IS NOT NULL
  AND started_at <= $__timeTo()::timestamptz
  AND (resolved_at IS NULL OR resolved_at >= $__timeFrom()::timestamptz)
ORDER BY 1"""),
        SqlAnnotation(
            name="Data stopped", color="orange",
            sql=f"""SELECT ts AS "time", 'no data from the devices' AS "text", kind AS "tags"
FROM ops_events
WHERE kind = 'data_stopped' AND subject = {PATIENT} AND $__timeFilter(ts)
ORDER BY ts"""),
        SqlAnnotation(
            name="Outcomes", color="purple",
            sql=f"""SELECT onset AS "time", 'outcome: ' || kind AS "text", 'outcome,' || kind AS "tags"
FROM outcomes
WHERE patient_id = {PATIENT} AND $__timeFilter(onset)
ORDER BY onset"""),
    )
    return Dashboard(uid="vitalrisk-patient", title="vitalrisk · Patient",
                     description="One patient's vitals against their baseline, risk and NEWS2 over time, with "
                                 "alerts and outcomes.",
                     tags=("care",), rows=(now, vitals, baseline, risk), variables=variables,
                     annotations=annotations, time_from="now-24h", refresh="1m")
