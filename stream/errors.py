"""Errors of the streaming pipeline.

::

    VitalsError
     ├── InvalidMessage     a device message that cannot be decoded or validated
     │                      (``reason`` is a short, low-cardinality code used as a metric label)
     └── ConfigurationError settings that cannot work together
"""

from __future__ import annotations


class VitalsError(Exception):
    """Root of vitalrisk's errors."""


class InvalidMessage(VitalsError):
    """A device message, or one reading in it, failed validation.

    Parameters
    ----------
    reason
        Short code for metrics and the dead-letter record, e.g. ``"not_json"``.
    detail
        One human-readable line stating the rule and the offending value.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ConfigurationError(VitalsError):
    """Settings or arguments that cannot work together."""
