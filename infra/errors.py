"""Errors of the local service manager.

::

    VitalsError
     └── InfraError
          ├── ServiceFailed     a service did not start or become healthy
          ├── ToolMissing       a binary it needs (java, mvn, initdb) is not installed
          └── TopicsMismatch    an existing topic the pipeline cannot run on (infra.topics)

Each ends ``vitalrisk infra`` (and ``demo``) with one line on stderr and exit status 1.
"""

from kernel.errors import VitalsError


class InfraError(VitalsError):
    """Root of the local service manager's errors."""


class ServiceFailed(InfraError):
    """A service did not start or did not become healthy in time."""


class ToolMissing(InfraError):
    """A program the service needs is not installed on this machine."""


class TopicsMismatch(InfraError):
    """An existing topic differs from the settings in a way the pipeline cannot run on, or cannot be created."""
