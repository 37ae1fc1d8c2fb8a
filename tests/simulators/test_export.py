"""Cohort export: round trip against the simulator's stream, schema, determinism, CLI errors."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from simulators.cohort import CohortConfig, episodes, population, simulate
from simulators.deterioration import Incidence
from simulators.export import (
    EPISODES_SCHEMA,
    PATIENTS_SCHEMA,
    READINGS_SCHEMA,
    export_cohort,
    read_export,
)
from simulators.faults import FaultRates
from simulators.population import CONDITIONS
from stream.cli import main

HOUR = 3_600_000
# Enough episodes in a few hours to fill the episodes table.
CONFIG = CohortConfig(patients=12, seed=5, duration_ms=3 * HOUR, incidence=Incidence().scaled(400.0))

Row = tuple[Any, ...]


def stream_readings(config: CohortConfig) -> list[Row]:
    """Every reading of the simulator's stream, flattened, in stream order."""
    rows = []
    for message in simulate(config):
        if message.kind == "reading" and isinstance(message.payload, dict):
            p = message.payload
            for r in p["readings"]:
                rows.append((p["patient_id"], p["device_id"], p["seq"], p["sent_at"], r["metric"], r["t"],
                             r["value"], r["unit"]))
    return rows


def table_rows(table: pa.Table) -> list[Row]:
    """Rows of a table, timestamps as epoch ms."""
    columns = []
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_timestamp(field.type):
            column = column.cast(pa.int64())
        columns.append(column.to_pylist())
    return list(zip(*columns))


@pytest.fixture(scope="module")
def expected() -> list[Row]:
    return stream_readings(CONFIG)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_round_trip_equals_the_simulators_stream(tmp_path: Path, fmt: str, expected: list[Row]) -> None:
    report = export_cohort(CONFIG, tmp_path, fmt=fmt, chunk_rows=1_000)

    readings = read_export(tmp_path / f"readings.{fmt}")
    assert table_rows(readings) == expected
    assert report.readings == len(expected) > 10_000
    eps = episodes(CONFIG)
    assert len(eps) >= 3 and report.outcome_events == sum(not e.resolved_without_event for e in eps)
    assert table_rows(read_export(tmp_path / f"episodes.{fmt}")) == [
        (e.patient_id, e.kind, e.prodrome_start_ms, e.onset_ms, e.recovery_start_ms, e.end_ms, e.severity,
         e.resolved_without_event) for e in eps
    ]
    patients = read_export(tmp_path / f"patients.{fmt}").to_pylist()
    assert [(p["patient_id"], p["age_years"], p["sex"], p["skin_tone"]) for p in patients] == [
        (p.patient_id, p.age_years, p.sex, p.skin_tone) for p in population(CONFIG)
    ]
    assert [tuple(c for c in CONDITIONS if row[c]) for row in patients] == [
        p.conditions for p in population(CONFIG)
    ]
    assert [row["baseline_heart_rate_bpm"] for row in patients] == [
        p.baseline.heart_rate_bpm for p in population(CONFIG)
    ]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"]["readings"] == len(expected)
    assert manifest["config"]["seed"] == 5 and manifest["format"] == fmt
    assert not list(tmp_path.glob("*.partial"))


def test_parquet_is_streamed_in_row_groups_with_the_declared_types(tmp_path: Path, expected: list[Row]) -> None:
    export_cohort(CONFIG, tmp_path, chunk_rows=1_000)
    meta = pq.ParquetFile(tmp_path / "readings.parquet").metadata
    assert meta.num_row_groups == -(-len(expected) // 1_000) > 10
    # Read by plain pyarrow, not our reader: the types are in the file.
    assert pq.read_schema(tmp_path / "readings.parquet").remove_metadata() == READINGS_SCHEMA
    assert pq.read_schema(tmp_path / "episodes.parquet").remove_metadata() == EPISODES_SCHEMA
    assert pq.read_schema(tmp_path / "patients.parquet").remove_metadata() == PATIENTS_SCHEMA
    schema = pq.read_schema(tmp_path / "readings.parquet")
    assert schema.field("t").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("value").type == pa.float64()
    assert schema.field("seq").type == pa.int64()
    assert pq.read_schema(tmp_path / "patients.parquet").field("skin_tone").type == pa.int8()


def test_csv_has_a_header_iso_times_and_reads_back_with_type_inference(tmp_path: Path) -> None:
    export_cohort(CONFIG, tmp_path, fmt="csv")
    with open(tmp_path / "readings.csv") as f:
        header, first = f.readline().strip(), f.readline().strip()
    assert header.replace('"', "").split(",") == READINGS_SCHEMA.names
    assert first.split(",")[5].endswith("Z") and first.split(",")[5].startswith("2026-01-05 00:00:")
    # Plain pyarrow, told nothing, infers the same columns (timestamps in ns) and the same values.
    inferred = pacsv.read_csv(tmp_path / "readings.csv")
    assert inferred.schema.field("t").type == pa.timestamp("ns", tz="UTC")
    assert [f.type for f in inferred.schema if f.name not in ("t", "sent_at")] == [
        f.type for f in READINGS_SCHEMA if f.name not in ("t", "sent_at")
    ]
    assert inferred.cast(READINGS_SCHEMA).equals(read_export(tmp_path / "readings.csv"))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_same_seed_gives_identical_files(tmp_path: Path, fmt: str) -> None:
    config = CohortConfig(patients=5, seed=9, duration_ms=HOUR, incidence=Incidence().scaled(1000.0))
    first, again, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    export_cohort(config, first, fmt=fmt, chunk_rows=500)
    export_cohort(config, again, fmt=fmt, chunk_rows=500)
    export_cohort(CohortConfig(patients=5, seed=10, duration_ms=HOUR), other, fmt=fmt)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.iterdir()) and len(names) == 4
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    assert (first / f"readings.{fmt}").read_bytes() != (other / f"readings.{fmt}").read_bytes()


def test_malformed_messages_are_counted_not_exported(tmp_path: Path) -> None:
    config = CohortConfig(patients=10, seed=3, duration_ms=HOUR, faults=FaultRates(malformed_prob=0.2,
                                                                                   duplicate_prob=0.05))
    report = export_cohort(config, tmp_path)
    assert report.malformed_messages > 50
    assert table_rows(read_export(tmp_path / "readings.parquet")) == stream_readings(config)


def test_memory_stays_bounded_as_the_period_grows(tmp_path: Path) -> None:
    def peak(hours: int) -> int:
        config = CohortConfig(patients=20, seed=2, duration_ms=hours * HOUR)
        tracemalloc.start()
        try:
            export_cohort(config, tmp_path / str(hours), chunk_rows=5_000)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(4) < 1.3 * peak(1)


def test_an_interrupted_export_leaves_no_partial_file(tmp_path: Path) -> None:
    def stop(_: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_cohort(CONFIG, tmp_path, chunk_rows=100, progress=stop, progress_every_s=0.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episodes.parquet", "patients.parquet"]


def test_cli_exports_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cohort"
    assert main(["export", "--patients", "3", "--days", "0.01", "--seed", "4", "--out", str(out),
                 "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert "readings" in captured.out and "exported" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["episodes.csv", "manifest.json", "patients.csv", "readings.csv"]
    minutes = json.loads((out / "manifest.json").read_text())["config"]["duration_ms"] // 60_000
    assert minutes == 14  # 0.01 days, to the nearest minute


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patients", "0"], "expected a positive integer"),
        (["--patients", "many"], "expected a positive integer"),
        (["--days", "-1"], "expected a positive number"),
        (["--days", "0.0001"], "--days must be at least one minute"),
        (["--format", "xlsx"], "invalid choice"),
        (["--seed", "-1"], "seed must be a non-negative integer"),
    ],
)
def test_cli_bad_arguments_end_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           args: list[str], message: str) -> None:
    argv = ["export", "--patients", "2", "--days", "1", "--out", str(tmp_path / "x"), *args]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own checks
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x").exists()


def test_cli_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file.txt"
    target.write_text("not a folder")
    assert main(["export", "--patients", "2", "--days", "1", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err
