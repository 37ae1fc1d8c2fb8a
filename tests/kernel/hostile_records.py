"""What a hostile sender can put in a record: hypothesis strategies of bytes, JSON and ids.

Arbitrary bytes, arbitrary JSON (deep, huge, wrong types, hostile strings) and the attacks of the
issue that started this (a 100,000-deep nest, 5,000-digit numbers, ids with NUL, lone surrogates,
newlines or 900 KB). The decoders' tests (``tests/kernel/test_wire.py``) and the core's
(``tests/stream/test_pipeline.py``) draw their records from here.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

START = 1_767_571_200_000

hostile_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "pt\x00", "\ud800", "pt-1\nINFO forged log line", "x" * 300, "Jane Doe", "../../etc",
                     "pt-1", "dev-1", "heart_rate", "beats/min", "vitalrisk.device/1", "vitalrisk.score/1"]),
)
leaf = st.one_of(st.none(), st.booleans(), st.integers(-(10**25), 10**25), st.floats(allow_nan=True),
                 hostile_text)
json_values = st.recursive(leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(hostile_text, inner, max_size=5)), max_leaves=30)


def device_like(draw_readings: st.SearchStrategy[object]) -> st.SearchStrategy[dict[str, object]]:
    """A device message with every field possibly wrong."""
    return st.fixed_dictionaries({
        "schema": st.one_of(st.just("vitalrisk.device/1"), json_values),
        "device_id": st.one_of(st.just("dev-1"), hostile_text, json_values),
        "patient_id": st.one_of(st.just("pt-1"), hostile_text, json_values),
        "seq": st.one_of(st.integers(-5, 10**22), json_values),
        "sent_at": st.one_of(st.just(START), json_values),
        "readings": st.one_of(st.lists(draw_readings, max_size=8), json_values),
    })


readings_like = st.one_of(json_values, st.fixed_dictionaries({
    "metric": st.one_of(st.sampled_from(["heart_rate", "oxygen_saturation"]), json_values),
    "t": st.one_of(st.integers(-1, START + 10**12), json_values),
    "value": st.one_of(st.floats(allow_nan=True), st.integers(-(10**21), 10**21), json_values),
    "unit": st.one_of(st.sampled_from(["beats/min", "%"]), json_values)}))

structured = st.one_of(json_values, device_like(readings_like), st.fixed_dictionaries({
    "schema": st.sampled_from(["vitalrisk.score/1", "vitalrisk.features/1", "vitalrisk.patient/1",
                               "vitalrisk.outcome/1"]),
    "patient_id": st.one_of(st.just("pt-1"), hostile_text), "t": json_values, "x": json_values,
    "window_start": json_values, "window_end": json_values, "score": json_values, "inputs": json_values,
    "kind": json_values, "onset": json_values, "sex": json_values, "conditions": json_values}))


def bytes_of(value: object) -> bytes:
    """``value`` as JSON bytes, lone surrogates and NaN included (as a careless sender writes them)."""
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


#: Any record value a sender could write: bytes, broken or hostile JSON, the known attacks.
records = st.one_of(st.binary(max_size=300), structured.map(bytes_of),
                    st.sampled_from([b"[" * 100_000 + b"]" * 100_000, b'{"seq": ' + b"9" * 5_000 + b"}",
                                     b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, b"", b"\xff\xfe", b"null",
                                     b'{"schema": "vitalrisk.device/1", "schema": "x"}']))

#: Ids that must never pass the id rule: NUL, a lone surrogate, a forged log line, 900 KB, a name, nothing.
HOSTILE_IDS = ["pt\x00", "\ud800", "pt-1\nforged", "x" * 900_000, "Jane Doe", ""]
