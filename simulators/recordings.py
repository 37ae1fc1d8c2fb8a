"""Heart rate from a real PPG recording that ships with heartpy, as a replayable CSV.

HeartPy (van Gent et al., 2019; the PyPI package ``heartpy``) ships three example
photoplethysmogram (PPG) recordings in its wheel, so they are available offline:

=========  =============  ==================================================================
example    file           what it is
=========  =============  ==================================================================
0          ``data.csv``   25 s of PPG at 100 Hz, no clock
1          ``data2.csv``  128 s of PPG at about 117 Hz, a millisecond timer from 0
2          ``data3.csv``  11.4 min of PPG at about 100 Hz, every sample stamped with its clock
                          time (2016-11-24 13:58:58 to 14:10:20; no zone given: taken as UTC)
=========  =============  ==================================================================

:func:`heart_rate_from_ppg` derives heart rate the way a wearable reports it: heartpy's
peak detection on 10-second segments overlapping by half (:func:`heartpy.process_segmentwise`),
one value every 5 seconds — the simulated wrist device's rate — stamped with the time of the
segment's last sample, when a device would have it. Segments heartpy rejects as bad signal
give no reading. Example 2 is the default: the longest, with real timestamps.

Run ``python -m simulators.recordings heartpy-hr.csv`` to write the CSV that
``vitalrisk replay`` reads (see :mod:`simulators.replay`).

Examples
--------
>>> derived = heart_rate_from_ppg(load_heartpy_ppg(0))  # 25 s: two and a half segments
>>> derived.segments, [(format_timestamp(r.t_ms), r.metric, r.value) for r in derived.readings]
(3, [('2026-01-05T00:00:09.990Z', 'heart_rate', 60.7), ('2026-01-05T00:00:14.990Z', 'heart_rate', 58.6), ('2026-01-05T00:00:19.990Z', 'heart_rate', 57.1)])
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from simulators.cohort import DEFAULT_START_MS
from simulators.replay import RecordedReading, format_timestamp, write_recording

#: heartpy's documented sampling rate of example 0, which has no clock of its own.
EXAMPLE0_SAMPLE_RATE_HZ = 100.0
#: Segment length and overlap of the heart-rate estimate: a value every 5 s.
SEGMENT_S = 10.0
SEGMENT_OVERLAP = 0.5


@dataclass(frozen=True, slots=True)
class PpgRecording:
    """A PPG signal with the epoch-ms time of every sample and its mean sampling rate."""

    signal: npt.NDArray[np.float64]
    t_ms: npt.NDArray[np.int64]
    sample_rate_hz: float


@dataclass(frozen=True, slots=True)
class DerivedHeartRate:
    """Heart-rate readings from a PPG; ``segments`` were analysed, the rejected ones gave none."""

    readings: list[RecordedReading]
    segments: int


def load_heartpy_ppg(example: int = 2, *, start_ms: int = DEFAULT_START_MS) -> PpgRecording:
    """One of heartpy's example recordings, with a time for every sample.

    Parameters
    ----------
    example
        0, 1 or 2 (see the module docstring).
    start_ms
        Epoch ms of the first sample of examples 0 and 1, which carry no clock time;
        example 2 keeps its own.

    Raises
    ------
    ValueError
        If ``example`` is not 0, 1 or 2.
    """
    if example not in (0, 1, 2):
        raise ValueError(f"heartpy ships examples 0, 1 and 2, got {example!r}")
    import heartpy as hp

    data, timer = hp.load_exampledata(example)
    signal = np.asarray(data, dtype=np.float64)
    if example == 2:
        # "2016-11-24 13:58:58.081000": numpy reads it as UTC, to the millisecond.
        t_ms = np.asarray(timer, dtype="datetime64[ms]").astype(np.int64)
    elif example == 1:
        t_ms = start_ms + np.rint(np.asarray(timer, dtype=np.float64)).astype(np.int64)
    else:
        t_ms = start_ms + np.rint(np.arange(signal.size) * 1000.0 / EXAMPLE0_SAMPLE_RATE_HZ).astype(np.int64)
    rate = (signal.size - 1) * 1000.0 / float(t_ms[-1] - t_ms[0])
    return PpgRecording(signal, t_ms, rate)


def heart_rate_from_ppg(ppg: PpgRecording, *, segment_s: float = SEGMENT_S,
                        overlap: float = SEGMENT_OVERLAP) -> DerivedHeartRate:
    """Heart rate (beats/min, one decimal) per PPG segment, with heartpy.

    Parameters
    ----------
    ppg
        The signal and its sample times.
    segment_s
        Segment length in seconds; a new value every ``segment_s * (1 - overlap)`` seconds.
    overlap
        Fraction of a segment shared with the next, in [0, 1).

    Raises
    ------
    ValueError
        If ``segment_s`` is not positive or ``overlap`` is outside [0, 1).
    """
    if not segment_s > 0:
        raise ValueError(f"segment_s must be positive, got {segment_s}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    import heartpy as hp

    from heartpy.peakdetection import make_windows

    # The segments heartpy will analyse; a tail shorter than a whole segment is left out.
    segments = len(make_windows(ppg.signal, ppg.sample_rate_hz, segment_s, overlap, segment_s))
    with warnings.catch_warnings():
        # heartpy warns about spline fits of its breathing estimate, which we do not use.
        warnings.simplefilter("ignore")
        _, measures = hp.process_segmentwise(ppg.signal, ppg.sample_rate_hz, segment_width=segment_s,
                                             segment_overlap=overlap, segment_min_size=segment_s)
    readings = []
    for bpm, (_, end) in zip(measures.get("bpm", []), measures.get("segment_indices", [])):
        if np.isfinite(bpm):
            readings.append(RecordedReading(int(ppg.t_ms[int(end) - 1]), "heart_rate", round(float(bpm), 1)))
    return DerivedHeartRate(readings, segments)


def write_heartpy_recording(out: TextIO, example: int = 2) -> DerivedHeartRate:
    """Derive heart rate from heartpy's example ``example`` and write it as a recording CSV."""
    derived = heart_rate_from_ppg(load_heartpy_ppg(example))
    write_recording(derived.readings, out)
    return derived


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Write the heart-rate CSV of a heartpy example; return the exit status."""
    so, err = stdout or sys.stdout, stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m simulators.recordings",
                                     description="Heart rate from a heartpy example PPG, as a replayable CSV.")
    parser.add_argument("out", type=Path, help="CSV to write (timestamp,metric,value)")
    parser.add_argument("--example", type=int, choices=[0, 1, 2], default=2)
    args = parser.parse_args(argv)
    try:
        with open(args.out, "w", newline="") as f:
            derived = write_heartpy_recording(f, args.example)
    except OSError as exc:
        err.write(f"recordings: cannot write {args.out}: {exc.strerror or exc}\n")
        return 2
    values = [r.value for r in derived.readings]
    if not values:
        err.write(f"recordings: heartpy found no usable segment in example {args.example}\n")
        return 1
    so.write(f"wrote {len(values)} heart-rate readings ({derived.segments - len(values)} of {derived.segments} "
             f"segments rejected; {min(values):.0f}-{max(values):.0f} beats/min, "
             f"{format_timestamp(derived.readings[0].t_ms)} to {format_timestamp(derived.readings[-1].t_ms)}) "
             f"to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
