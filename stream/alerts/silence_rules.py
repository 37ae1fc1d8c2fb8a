"""How wide and how long a silence may be: the one check behind ``vitalrisk silence`` and ``POST /silences``.

A silence without a patient mutes every patient's pages, so it must be asked for explicitly
(``all_patients``) and may last only ``VITALS_SILENCE_WILDCARD_MAX_MINUTES`` (an hour by
default): long enough for planned maintenance, too short to forget. One patient's silence may
last ``VITALS_SILENCE_MAX_MINUTES`` (a week). A silence can be ended early (``vitalrisk
unsilence``, ``DELETE /silences/{id}``).

Examples
--------
>>> bounds = SilenceBounds(patient_max_minutes=10_080, wildcard_max_minutes=60)
>>> bounds.check(patient_id="pt-1", all_patients=False, minutes=120)
>>> bounds.check(patient_id=None, all_patients=False, minutes=30)
Traceback (most recent call last):
...
kernel.errors.InvalidRequest: a silence without a patient silences every patient: name one, or ask for all patients explicitly (all_patients, --all-patients), for at most 60 minutes
>>> bounds.check(patient_id=None, all_patients=True, minutes=120)
Traceback (most recent call last):
...
kernel.errors.InvalidRequest: a silence of every patient lasts at most 60 minutes (VITALS_SILENCE_WILDCARD_MAX_MINUTES), got 120
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kernel.errors import InvalidRequest
from kernel.settings import Settings


@dataclass(frozen=True, slots=True)
class SilenceBounds:
    """The longest silence of one patient, and of every patient, in minutes."""

    patient_max_minutes: float
    wildcard_max_minutes: float

    @classmethod
    def from_settings(cls, settings: Settings) -> SilenceBounds:
        return cls(settings.silence_max_minutes, settings.silence_wildcard_max_minutes)

    def check(self, *, patient_id: str | None, all_patients: bool, minutes: float) -> None:
        """Refuse a silence that is wider or longer than allowed (:class:`~kernel.errors.InvalidRequest`)."""
        if not math.isfinite(minutes) or minutes <= 0:
            raise InvalidRequest(f"a silence lasts a positive number of minutes, got {minutes:g}")
        if patient_id is not None and all_patients:
            raise InvalidRequest("a silence is for one patient or for all patients, not both")
        if patient_id is None:
            if not all_patients:
                raise InvalidRequest("a silence without a patient silences every patient: name one, or ask for "
                                     "all patients explicitly (all_patients, --all-patients), for at most "
                                     f"{self.wildcard_max_minutes:g} minutes")
            if minutes > self.wildcard_max_minutes:
                raise InvalidRequest(f"a silence of every patient lasts at most {self.wildcard_max_minutes:g} "
                                     f"minutes (VITALS_SILENCE_WILDCARD_MAX_MINUTES), got {minutes:g}")
        elif minutes > self.patient_max_minutes:
            raise InvalidRequest(f"a silence of one patient lasts at most {self.patient_max_minutes:g} minutes "
                                 f"(VITALS_SILENCE_MAX_MINUTES), got {minutes:g}")
