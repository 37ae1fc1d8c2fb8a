"""Errors of the sinks.

::

    SinkError
     ├── SinkUnavailable   the database could not be reached or kept failing past the retries
     ├── SinkRejected      the database refused a write, or holds a row, that retrying cannot fix
     ├── MigrationFailed   a schema migration could not be applied
     └── RegistryError     the model registry cannot serve the request (table missing, no such
                           version, a version registered with other bytes)
"""

from kernel.errors import VitalsError


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
