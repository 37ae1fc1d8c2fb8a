"""Errors of the models package.

::

    VitalsError
     └── ModelsError
          ├── InvalidOutcome      an outcome event that is not a ``vitalrisk.outcome/1`` record
          ├── UnknownModel        ``make_risk_model`` was asked for a model it does not build
          └── SnapshotError       a snapshot that cannot be written or trusted
               ├── SnapshotKeyMissing   no (or too short a) ``snapshot_key`` is configured
               └── SnapshotRejected     bad magic, bad signature or bad payload: never unpickled

(The model registry's errors are the sinks': :class:`sinks.errors.RegistryError`.)

``vitalrisk`` exits with status 2 for UnknownModel and SnapshotKeyMissing (a setting to fix), 1 for
the rest (:attr:`kernel.errors.VitalsError.exit_status`).
"""

from __future__ import annotations

from kernel.errors import EXIT_BAD_INPUT, VitalsError


class ModelsError(VitalsError):
    """Root of the models package's errors."""


class InvalidOutcome(ModelsError):
    """An outcome event that is not a valid ``vitalrisk.outcome/1`` record."""


class UnknownModel(ModelsError, ValueError):
    """``make_risk_model`` was asked for a model name it does not know."""

    exit_status = EXIT_BAD_INPUT


class SnapshotError(ModelsError):
    """A model snapshot that cannot be written or loaded."""


class SnapshotKeyMissing(SnapshotError):
    """No ``snapshot_key`` is configured, or it is shorter than the minimum length."""

    exit_status = EXIT_BAD_INPUT


class SnapshotRejected(SnapshotError):
    """Bytes that are not a snapshot signed with our key; they are never unpickled."""
