"""Errors of the sinks.

::

    SinkError
     ├── SinkUnavailable   the database could not be reached or kept failing past the retries
     ├── SinkRejected      the database refused a write, or holds a row, that retrying cannot fix
     ├── MigrationFailed   a schema migration could not be applied
     ├── RegistryError     the model registry cannot serve the request (table missing, no such
     │                     version, a version registered with other bytes)
     ├── UnknownDevice     no device with this id holds an active credential (exit status 2)
     └── DeviceAlreadyEnrolled  the device holds an active credential already (exit status 2)
"""

from kernel.errors import EXIT_BAD_INPUT, VitalsError


class SinkError(VitalsError):
    """Root of the sinks' errors."""


class SinkUnavailable(SinkError):
    """The database could not be reached, or kept failing past the configured retries."""


class MigrationFailed(SinkError):
    """A schema migration could not be applied; the database is left at the previous version."""


class SinkRejected(SinkError):
    """The database refused a write for a reason retrying cannot fix (a constraint, a privilege),
    or returned a row that fails its integrity check (a registry blob that does not match its SHA-256)."""


class RegistryError(SinkError):
    """The model registry cannot serve the request (table missing, no such version, a version
    already registered with other bytes)."""


class UnknownDevice(SinkError):
    """No device with this id holds a credential that is not revoked."""

    exit_status = EXIT_BAD_INPUT


class DeviceAlreadyEnrolled(SinkError):
    """The device already holds a credential that is not revoked; revoke it before enrolling again."""

    exit_status = EXIT_BAD_INPUT
