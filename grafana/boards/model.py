"""The Model board: is the learned model still better than NEWS2, calibrated, stable and fair?

For the clinical-safety and data-science owners. Quality, drift and fairness come from the
trainer's prequential (test-then-train) metrics in Prometheus; ``model="news2"`` is the NEWS2
baseline scored the same way, so every panel compares the model with NEWS2.

Examples
--------
>>> board = model_board()
>>> [row.title for row in board.rows]
['Discrimination and calibration', 'Learning', 'Drift and snapshots', 'Fairness']
"""

from __future__ import annotations

from grafana.dashboard import (Dashboard, Panel, PromQL, QueryVariable, Row, SqlAnnotation, Step, bargauge, by_name,
                               sql, stat, table, timeseries)
from grafana.datasources import PROMETHEUS

RATE = "$__rate_interval"
#: Series selector of the model and condition variables.
SELECT = 'model=~"$model", condition=~"$condition"'
#: Reference AUROC below which a model is no better than a coin for ranking patients (drawn dashed).
AUROC_REFERENCE = 0.7
#: Largest subgroup gap of a metric considered acceptable (drawn dashed).
FAIRNESS_GAP_REFERENCE = 0.05
LEGEND = "{{model}} · {{condition}}"
#: The ops event kind that concerns one patient, not a model (shown on the Patient board).
PATIENT_EVENT = "data_stopped"
#: The ops event kind ``vitalrisk evaluate --store`` records (stream/evaluate_report.py BURDEN_EVENT): an
#: evaluation's alert burden by subgroup, shown in its own table rather than as an event marker.
BURDEN_EVENT = "alert_burden"
#: Subgroups whose pages per patient-day exceed this multiple of the whole cohort's are coloured.
BURDEN_RATIO_REFERENCE = 1.5


def _quality(title: str, metric: str, description: str, *, higher_is_better: bool, reference: float | None,
             unit: str = "none") -> Panel:
    """One prequential metric per model and condition over time."""
    if reference is None:
        steps: tuple[Step, ...] = (Step("text"),)
    elif higher_is_better:
        steps = (Step("red"), Step("green", reference))
    else:
        steps = (Step("green"), Step("red", reference))
    return timeseries(title, description,
                      PromQL(f"max by (model, condition) ({metric}{{{SELECT}}})", legend=LEGEND),
                      unit=unit, decimals=3, min=0, max=1, width=12, thresholds=steps,
                      thresholds_style="dashed" if reference is not None else "off")


def model_board() -> Dashboard:
    """AUROC, AUPRC, Brier and calibration for model and NEWS2; drift; snapshots; fairness."""
    quality = Row("Discrimination and calibration", (
        bargauge("AUROC now", "Current rolling AUROC of each model and condition: how well the score ranks "
                 "patients who deteriorate above those who do not (0.5 is chance).",
                 PromQL(f"max by (model, condition) (vitals_model_auroc{{{SELECT}}})", legend=LEGEND, instant=True),
                 min=0.5, max=1, decimals=3, width=12, height=6,
                 thresholds=(Step("red"), Step("orange", AUROC_REFERENCE), Step("green", 0.8))),
        bargauge("Brier score now", "Current rolling Brier score (mean squared error of the predicted "
                 "probability; lower is better, 0 is perfect).",
                 PromQL(f"max by (model, condition) (vitals_model_brier{{{SELECT}}})", legend=LEGEND, instant=True),
                 min=0, max=0.25, decimals=3, width=12, height=6,
                 thresholds=(Step("green"), Step("orange", 0.1), Step("red", 0.2))),
        _quality("AUROC over time", "vitals_model_auroc", "Rolling prequential AUROC: each window is scored "
                 "before its label is learned, so this is out-of-sample. The model should stay above NEWS2 "
                 f"and above the dashed reference ({AUROC_REFERENCE}).",
                 higher_is_better=True, reference=AUROC_REFERENCE),
        _quality("AUPRC over time", "vitals_model_auprc", "Rolling AUPRC: precision-recall area, the better "
                 "summary when deterioration is rare (chance equals the event rate, not 0.5).",
                 higher_is_better=True, reference=None),
        _quality("Brier score over time", "vitals_model_brier", "Rolling Brier score: accuracy of the "
                 "probabilities themselves (lower is better).", higher_is_better=False, reference=None),
        _quality("Calibration error over time", "vitals_model_ece", "Rolling expected calibration error: "
                 "the average gap between predicted risk and observed event rate across risk bins (lower "
                 "is better). A rise means scores drift away from real probabilities.",
                 higher_is_better=False, reference=0.05),
    ))
    learning = Row("Learning", (
        timeseries("Labelled windows learned per second", "How fast the trainer learns from windows whose "
                   "outcome label has arrived (labels come late: the outcome follows the window).",
                   PromQL(f"sum by (model) (rate(vitals_trainer_examples_total[{RATE}]))", legend="{{model}}"),
                   unit="short", min=0, width=12),
        timeseries("Windows waiting for their label", "Scored windows still waiting for the outcome horizon "
                   "to pass before they can be labelled and learned from.",
                   PromQL("sum(vitals_pending_label_windows)", legend="pending"), unit="short", min=0, width=12),
    ))
    drift = Row("Drift and snapshots", (
        timeseries("Drift events", "Changes in the model's loss detected by ADWIN, per model (marked on every "
                   "graph of this board from the ops_events table). After drift the model adapts: check that "
                   "AUROC recovers.",
                   PromQL(f"sum by (model) (increase(vitals_drift_events_total[{RATE}]))", legend="{{model}}"),
                   bars=True, unit="short", min=0, decimals=0, width=8),
        timeseries("Operational events", "Events the model service raised by kind (drift, fairness gap, data "
                   "stopped).",
                   PromQL(f"sum by (kind) (increase(vitals_ops_events_total[{RATE}]))", legend="{{kind}}"),
                   bars=True, stacked=True, unit="short", min=0, decimals=0, width=8),
        stat("Scorers behind the newest snapshot", "Per model: newest snapshot version in use minus the "
             "oldest any scorer still uses. 0 means every worker has hot-swapped to the newest snapshot.",
             PromQL("max by (model) (vitals_model_version) - min by (model) (vitals_model_version)",
                    legend="{{model}}"),
             text_mode="value_and_name", decimals=0, width=8, height=8,
             thresholds=(Step("green"), Step("orange", 1))),
        timeseries("Snapshot version per scorer", "The snapshot version each worker scores with, over time: "
                   "steps are hot swaps to a new snapshot.",
                   PromQL("max by (model, instance) (vitals_model_version)", legend="{{model}} @ {{instance}}"),
                   steps=True, decimals=0, width=12),
        table("Snapshots in the registry", "Every registered model version, newest first: when the trainer "
              "published it, how many labelled windows it had learned from, and its metrics at that time. "
              "Versions are immutable (the database checks each blob's SHA-256).",
              sql("""
                  SELECT created_at AS "created",
                         model_name AS "model",
                         model_version AS "version",
                         examples_seen AS "examples learned",
                         metrics::text AS "metrics at snapshot",
                         left(model_sha256, 12) AS "sha256"
                  FROM model_registry
                  ORDER BY created_at DESC, model_name
                  LIMIT 100""", table=True),
              width=12, overrides=(by_name("created", unit="dateTimeAsLocal"),)),
        table("Model events in range", "Drift and fairness events the model service recorded (ops_events), "
              "with their details: the audit trail behind the markers on this board's graphs.",
              sql(f"""
                  SELECT ts AS "time", kind, subject, details::text AS "details"
                  FROM ops_events
                  WHERE $__timeFilter(ts) AND kind NOT IN ('{PATIENT_EVENT}', '{BURDEN_EVENT}')
                  ORDER BY ts DESC
                  LIMIT 500""", table=True),
              width=24, height=6, overrides=(by_name("time", unit="dateTimeAsLocal"),)),
    ))
    fairness = Row("Fairness", (
        bargauge("AUROC by subgroup now", "Current rolling AUROC in each patient subgroup (sex, age band, "
                 "skin tone). A subgroup well below the others is served worse by the model; pulse "
                 "oximetry over-reads SpO2 on darker skin, so watch skin tone closely.",
                 PromQL('max by (model, attribute, group) (vitals_subgroup_auroc{model=~"$model"})',
                        legend="{{model}} · {{attribute}} = {{group}}", instant=True),
                 min=0.5, max=1, decimals=3, width=12, height=10,
                 thresholds=(Step("red"), Step("orange", AUROC_REFERENCE), Step("green", 0.8))),
        timeseries("Largest gap between subgroups", "Per model and attribute, the largest difference of a "
                   "metric between subgroups. Above the dashed line "
                   f"({FAIRNESS_GAP_REFERENCE}) the model is treating subgroups unequally.",
                   PromQL('max by (model, metric, attribute) (vitals_fairness_gap{model=~"$model"})',
                          legend="{{model}} · {{metric}} by {{attribute}}"),
                   min=0, decimals=3, width=12, height=10,
                   thresholds=(Step("green"), Step("red", FAIRNESS_GAP_REFERENCE)), thresholds_style="dashed"),
        timeseries("AUROC by subgroup over time", "Rolling AUROC in each subgroup over time.",
                   PromQL('max by (model, attribute, group) (vitals_subgroup_auroc{model=~"$model"})',
                          legend="{{model}} · {{attribute}} = {{group}}"),
                   decimals=3, min=0.5, max=1, width=24),
        table("Alert burden by subgroup (latest stored evaluation)", "The model's pages in each subgroup under "
              "the evaluated alert policy, from the newest `vitalrisk evaluate --store` of each model (simulated "
              "cohorts; with --tune-seeds/--test-seeds, the pooled test cohorts only): pages per patient-day, "
              "PPV and episode sensitivity with their 95 % bootstrap intervals over patients. 'ratio' is the "
              "group's pages per patient-day over the whole cohort's: a policy that pages one group far more "
              f"shows above {BURDEN_RATIO_REFERENCE:g}. Not limited to the time range: an evaluation is run "
              "rarely.",
              sql(f"""
                  SELECT e.ts AS "evaluated",
                         e.subject AS "model",
                         e.details->>'policy' AS "policy",
                         e.details->>'test_seeds' AS "cohorts",
                         s->>'attribute' AS "attribute",
                         s->>'group' AS "group",
                         (s->>'patients')::int AS "patients",
                         (s->>'pages')::int AS "pages",
                         (s->'pages_per_patient_day'->>'value')::float8 AS "pages per patient-day",
                         (s->'pages_per_patient_day'->>'value')::float8
                           / nullif((e.details->'overall'->'pages_per_patient_day'->>'value')::float8, 0) AS "ratio",
                         (s->'ppv'->>'value')::float8 AS "PPV",
                         (s->'ppv'->'ci95'->>0) || '–' || (s->'ppv'->'ci95'->>1) AS "PPV 95 % CI",
                         (s->>'onsets')::int AS "onsets",
                         (s->'sensitivity'->>'value')::float8 AS "episode sensitivity",
                         (s->'sensitivity'->'ci95'->>0) || '–' || (s->'sensitivity'->'ci95'->>1)
                           AS "sensitivity 95 % CI"
                  FROM (SELECT DISTINCT ON (subject) ts, subject, details
                        FROM ops_events
                        WHERE kind = '{BURDEN_EVENT}'
                        ORDER BY subject, ts DESC) AS e
                  CROSS JOIN LATERAL jsonb_array_elements(e.details->'subgroups') AS s
                  ORDER BY e.subject, s->>'attribute', s->>'group'""", table=True),
              width=24, height=10,
              overrides=(by_name("evaluated", unit="dateTimeAsLocal"),
                         by_name("pages per patient-day", decimals=3), by_name("PPV", decimals=2, unit="percentunit"),
                         by_name("episode sensitivity", decimals=2, unit="percentunit"),
                         by_name("ratio", decimals=2, custom__cellOptions={"type": "color-text"},
                                 thresholds={"mode": "absolute", "steps": [
                                     {"color": "green", "value": None},
                                     {"color": "red", "value": BURDEN_RATIO_REFERENCE}]}))),
    ))
    variables = (
        QueryVariable(name="model", label="Model", datasource=PROMETHEUS, multi=True, include_all=True,
                      description="Models to show; news2 is the NEWS2 baseline.",
                      query="label_values(vitals_model_auroc, model)"),
        QueryVariable(name="condition", label="Condition", datasource=PROMETHEUS, multi=True, include_all=True,
                      description="Outcome the metric is computed for (any, hf_decompensation, ...).",
                      query="label_values(vitals_model_auroc, condition)"),
    )
    annotations = (
        SqlAnnotation(name="Model events", color="purple",
                      sql=f"""SELECT ts AS "time", kind || ': ' || subject AS "text", kind AS "tags"
FROM ops_events
WHERE $__timeFilter(ts) AND kind NOT IN ('{PATIENT_EVENT}', '{BURDEN_EVENT}')
ORDER BY ts"""),
    )
    return Dashboard(uid="vitalrisk-model", title="vitalrisk · Model",
                     description="Online model quality against NEWS2, calibration, drift, snapshot versions and "
                                 "per-subgroup fairness.",
                     tags=("model",), rows=(quality, learning, drift, fairness), variables=variables,
                     annotations=annotations, time_from="now-7d", refresh="5m")
