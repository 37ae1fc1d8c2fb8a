"""Errors of the local service manager.

::

    VitalsError
     └── InfraError
          ├── ServiceFailed     a service did not start or become healthy
          └── ToolMissing       a binary it needs (java, mvn, initdb) is not installed

Both end ``vitalrisk infra`` (and ``demo``) with one line on stderr and exit status 1.
"""

from kernel.errors import VitalsError


class InfraError(VitalsError):
    """Root of the local service manager's errors."""


class ServiceFailed(InfraError):
    """A service did not start or did not become healthy in time."""


class ToolMissing(InfraError):
    """A program the service needs is not installed on this machine."""
