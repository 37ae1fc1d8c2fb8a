"""The Care board: which patients need attention now, and which alerts are waiting for someone.

For the ward's nurses and the outreach team. Every panel reads TimescaleDB as the read-only
``vitalrisk_reader`` role. "Current" means each patient's latest scored window inside the time
range, so a patient whose device fell silent drops off after the range (6 h by default).

Examples
--------
>>> board = care_board()
>>> [row.title for row in board.rows]
['Patients by current risk', 'Trends', 'Alerts']
"""

from __future__ import annotations

from grafana.boards.clinical import BAND_MAPPING, NEWS2_TOTAL_STEPS, RISK_STEPS, model_variable
from grafana.dashboard import Dashboard, Row, Step, by_name, sql, stat, table, timeseries, value_text, with_sql

#: How many patients the sparkline strip shows.
TOP_PATIENTS = 12
#: Patient board link from a patient id cell, keeping the model and time range.
PATIENT_LINK = {"title": "Open this patient's board",
                "url": "/d/vitalrisk-patient?var-patient=${__value.raw}&var-model=${model}&${__url_time_range}"}

#: The first acknowledgement of alert ``a``, as ``ack``: the alerter's API writes it at once and
#: the engine copies it onto the alert row at its next tick, so the board reads the source.
FIRST_ACK = ("LEFT JOIN LATERAL (SELECT k.acknowledged_by, k.acknowledged_at FROM acknowledgements AS k "
             "WHERE k.alert_id = a.alert_id ORDER BY k.ack_id LIMIT 1) AS ack ON TRUE")
#: Alert severities (stream/alerts/rules.py) and their colours.
SEVERITY_MAPPING = value_text({"critical": ("critical", "red"), "warning": ("warning", "orange"),
                               "info": ("info", "blue")})

#: Each patient's latest score in the range, for the selected model (a CTE body).
LATEST = """
    SELECT DISTINCT ON (patient_id)
           patient_id, window_start, window_end, score, news2_total, news2_band, model_version, missing_inputs
    FROM risk_scores
    WHERE $__timeFilter(window_start) AND model_name = ${model:sqlstring}
    ORDER BY patient_id, window_start DESC"""


def care_board() -> Dashboard:
    """Patients ranked by risk with NEWS2, their trends, open alerts and acknowledgements."""
    ranking = Row("Patients by current risk", (
        stat("Ward at a glance", "Patients with a score in the range, and how many of them are in each NEWS2 "
             "band now (their latest window). High: emergency response; medium: urgent review; low-medium: "
             "one vital scored 3; partial: blood pressure or temperature not measured within 12 h.",
             with_sql({"latest": LATEST}, """
                 SELECT count(*) AS "patients",
                        count(*) FILTER (WHERE news2_band = 'high') AS "high",
                        count(*) FILTER (WHERE news2_band = 'medium') AS "medium",
                        count(*) FILTER (WHERE news2_band = 'low-medium') AS "low-medium",
                        count(*) FILTER (WHERE cardinality(missing_inputs) > 0) AS "partial NEWS2"
                 FROM latest""", table=True),
             text_mode="value_and_name", width=24, height=4, decimals=0, thresholds=(Step("text"),),
             overrides=(by_name("high", color={"mode": "fixed", "fixedColor": "red"}),
                        by_name("medium", color={"mode": "fixed", "fixedColor": "orange"}),
                        by_name("low-medium", color={"mode": "fixed", "fixedColor": "yellow"}),
                        by_name("partial NEWS2", color={"mode": "fixed", "fixedColor": "blue"}))),
        table("Patients ranked by current risk", "Every patient's latest score, highest risk first, with its "
              "NEWS2 total and band. 'not measured' lists vitals that scored 0 only because no recent "
              "measurement exists, so the NEWS2 may understate risk. Click a patient for their board.",
              with_sql({"latest": LATEST}, """
                  SELECT patient_id AS "patient",
                         score AS "risk",
                         news2_total AS "NEWS2",
                         news2_band AS "band",
                         array_to_string(missing_inputs, ', ') AS "not measured",
                         window_end AS "as of",
                         model_version AS "model version"
                  FROM latest
                  ORDER BY score DESC, news2_total DESC, patient_id
                  LIMIT 200""", table=True),
              width=24, height=12, sort_by="risk",
              overrides=(
                  by_name("patient", links=[PATIENT_LINK], custom__width=160),
                  by_name("risk", unit="percentunit", decimals=0, thresholds={
                      "mode": "absolute", "steps": [s.json() for s in RISK_STEPS]},
                      custom__cellOptions={"type": "color-background", "mode": "basic"}, custom__width=90),
                  by_name("NEWS2", decimals=0, thresholds={
                      "mode": "absolute", "steps": [s.json() for s in NEWS2_TOTAL_STEPS]},
                      custom__cellOptions={"type": "color-background", "mode": "basic"}, custom__width=80),
                  by_name("band", mappings=[BAND_MAPPING],
                          custom__cellOptions={"type": "color-text"}, custom__width=220),
                  by_name("as of", unit="dateTimeAsLocal", custom__width=170),
              )),
    ))
    trends = Row("Trends", (
        stat(f"NEWS2 trend of the {TOP_PATIENTS} highest-risk patients",
             "One tile per patient: the sparkline is NEWS2 over the range, the number the latest value. "
             "A rising line is the early warning; the colour is the NEWS2 band of the latest total.",
             with_sql({"latest": LATEST,
                       "top": f"SELECT patient_id FROM latest ORDER BY score DESC, news2_total DESC, patient_id "
                              f"LIMIT {TOP_PATIENTS}"}, """
                 SELECT $__timeGroupAlias(r.window_start, $__interval),
                        r.patient_id AS metric,
                        max(r.news2_total) AS "NEWS2"
                 FROM risk_scores AS r
                 JOIN top USING (patient_id)
                 WHERE $__timeFilter(r.window_start) AND r.model_name = ${model:sqlstring}
                 GROUP BY 1, 2
                 ORDER BY 1"""),
             sparkline=True, background=True, text_mode="value_and_name", width=24, height=8, decimals=0,
             thresholds=NEWS2_TOTAL_STEPS, min=0, options={"orientation": "vertical"}),
        timeseries("Patients by NEWS2 band over time", "How many patients were in each band per interval "
                   "(a patient counts in every band they reached in the interval). Growth of the "
                   "orange and red bands is ward-level deterioration or a data problem.",
                   sql("""
                       SELECT $__timeGroupAlias(window_start, $__interval),
                              news2_band AS metric,
                              count(DISTINCT patient_id) AS "patients"
                       FROM risk_scores
                       WHERE $__timeFilter(window_start) AND model_name = ${model:sqlstring}
                       GROUP BY 1, 2
                       ORDER BY 1"""),
                   bars=True, stacked=True, unit="short", min=0, width=24,
                   overrides=tuple(by_name(band, color={"mode": "fixed", "fixedColor": color})
                                   for band, color in (("low", "green"), ("low-medium", "yellow"),
                                                       ("medium", "orange"), ("high", "red")))),
    ))
    alerts = Row("Alerts", (
        stat("Alerts now", "Firing alerts nobody has acknowledged yet (act on these first), all firing "
             "alerts, and episodes building up (pending: over the threshold, not yet long enough to page). "
             "A patient's model-risk heads count once, as the group they page through.",
             sql("""
                 SELECT count(*) FILTER (WHERE a.state = 'firing' AND ack.acknowledged_at IS NULL)
                            AS "firing, not acknowledged",
                        count(*) FILTER (WHERE a.state = 'firing') AS "firing",
                        count(*) FILTER (WHERE a.state = 'pending') AS "pending"
                 FROM alerts AS a
                 """ + FIRST_ACK + """
                 WHERE a.state <> 'resolved' AND a.group_id IS NULL""", table=True),
             text_mode="value_and_name", background=True, width=6, height=9, decimals=0,
             thresholds=(Step("green"), Step("red", 1)), options={"orientation": "horizontal"},
             overrides=(by_name("firing", color={"mode": "fixed", "fixedColor": "orange"}),
                        by_name("pending", color={"mode": "fixed", "fixedColor": "blue"}))),
        table("Firing alerts", "Every alert that has paged and not resolved: unacknowledged first, then the "
              "most severe, then the oldest. 'acknowledged by' shows who has taken it; 'heads' lists the "
              "model-risk heads that fired in a patient's grouped model-risk alert (kind risk_high).",
              sql("""
                  SELECT a.patient_id AS "patient",
                         a.kind,
                         (SELECT string_agg(DISTINCT replace(h.kind, 'risk_high:', ''), ', ')
                          FROM alerts AS h WHERE h.group_id = a.alert_id) AS "heads",
                         a.severity,
                         a.started_at AS "since",
                         extract(epoch FROM now() - a.started_at) AS "open for",
                         a.peak,
                         ack.acknowledged_by AS "acknowledged by",
                         ack.acknowledged_at AS "acknowledged at"
                  FROM alerts AS a
                  """ + FIRST_ACK + """
                  WHERE a.state = 'firing' AND a.group_id IS NULL
                  ORDER BY ack.acknowledged_at IS NOT NULL,
                           CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
                           a.started_at, a.patient_id
                  LIMIT 200""", table=True),
              width=18, height=9,
              overrides=(by_name("patient", links=[PATIENT_LINK]),
                         by_name("severity", mappings=[SEVERITY_MAPPING],
                                 custom__cellOptions={"type": "color-text"}),
                         by_name("open for", unit="s", decimals=0),
                         by_name("peak", decimals=2),
                         by_name("since", unit="dateTimeAsLocal"),
                         by_name("acknowledged at", unit="dateTimeAsLocal"))),
        timeseries("Alerts started by kind", "Alert episodes that paged, by kind, per interval of their start "
                   "(news2_high, news2_red_parameter, risk_high: a patient's grouped model-risk heads, counted "
                   "once; risk_high:<condition> when grouping is off; data_stopped).",
                   sql("""
                       SELECT $__timeGroupAlias(started_at, $__interval), kind AS metric, count(*) AS "alerts"
                       FROM alerts
                       WHERE $__timeFilter(started_at) AND fired_at IS NOT NULL AND group_id IS NULL
                       GROUP BY 1, 2
                       ORDER BY 1"""),
                   bars=True, stacked=True, unit="short", min=0, decimals=0, width=24, height=6),
        table("Acknowledgements in range", "Who acknowledged which alert, through what (http API or cli), "
              "and how long after its first page.",
              sql("""
                  SELECT k.acknowledged_at AS "acknowledged at",
                         a.patient_id AS "patient",
                         a.kind,
                         a.severity,
                         k.acknowledged_by AS "acknowledged by",
                         k.via,
                         extract(epoch FROM k.acknowledged_at - a.notified_at) AS "time to acknowledge",
                         a.state
                  FROM acknowledgements AS k
                  JOIN alerts AS a USING (alert_id)
                  WHERE $__timeFilter(k.acknowledged_at)
                  ORDER BY k.acknowledged_at DESC
                  LIMIT 500""", table=True),
              width=14, height=8,
              overrides=(by_name("patient", links=[PATIENT_LINK]),
                         by_name("severity", mappings=[SEVERITY_MAPPING],
                                 custom__cellOptions={"type": "color-text"}),
                         by_name("time to acknowledge", unit="s", decimals=0),
                         by_name("acknowledged at", unit="dateTimeAsLocal"))),
        timeseries("Time to acknowledge", "Median and 90th percentile of the time from an alert's first page "
                   "to its first acknowledgement, per interval of acknowledgement.",
                   sql("""
                       SELECT $__timeGroupAlias(k.acknowledged_at, $__interval),
                              percentile_cont(0.5) WITHIN GROUP (
                                  ORDER BY extract(epoch FROM k.acknowledged_at - a.notified_at)) AS "median",
                              percentile_cont(0.9) WITHIN GROUP (
                                  ORDER BY extract(epoch FROM k.acknowledged_at - a.notified_at)) AS "p90"
                       FROM acknowledgements AS k
                       JOIN alerts AS a USING (alert_id)
                       WHERE $__timeFilter(k.acknowledged_at) AND a.notified_at IS NOT NULL
                       GROUP BY 1
                       ORDER BY 1"""),
                   unit="s", min=0, width=10, height=8),
    ))
    return Dashboard(uid="vitalrisk-care", title="vitalrisk · Care board",
                     description="Patients ranked by current risk with NEWS2, their trends, open alerts and "
                                 "acknowledgements.",
                     tags=("care",), rows=(ranking, trends, alerts), variables=(model_variable(),),
                     time_from="now-6h", refresh="1m")
