"""The root of every vitalrisk error and the errors shared by all packages.

Each package's own ``errors.py`` derives its narrow errors from :class:`VitalsError`
(``models/errors.py``, ``sinks/errors.py``, ``infra/errors.py``); the alerting's errors, shared by
the alert engine, the alert store and the webhook sender, are here (``AlertError``).

::

    VitalsError                    exit status 1 unless stated
     ├── InvalidMessage     a device message that cannot be decoded or validated
     │                      (``reason`` is a short, low-cardinality code used as a metric label)
     ├── ConfigurationError settings or arguments that cannot work together (exit status 2)
     ├── ServiceUnavailable Kafka or PostgreSQL does not answer at the configured address
     ├── PortInUse          a port a service would listen on is taken by another process
     ├── ProcessDied        a process the command started (the demo's worker) exited
     └── AlertError         the alerting's errors (engine, store, webhooks, API)
          ├── InvalidPolicy, InvalidRequest, UnknownAlert, UnknownSilence   (exit status 2)
          └── AlertNotFiring, SilenceEnded, AlertStoreUnavailable, AlertDeliveryFailed, SignatureInvalid

Each class carries the ``vitalrisk`` command's exit status for it (:attr:`VitalsError.exit_status`):
2 when what the user typed or configured must change, 1 when something outside must (a service
started, a port freed) or the work failed while running. ``vitalrisk`` prints the message as its
one line on stderr, so a message states the rule, the value and, where there is one, the fix.
"""

from __future__ import annotations

import errno

#: Exit status of a failure outside the user's input: a service down, a port taken, a run that failed.
EXIT_FAILURE = 1
#: Exit status of bad input: an argument or setting that breaks a rule.
EXIT_BAD_INPUT = 2


class VitalsError(Exception):
    """Root of vitalrisk's errors."""

    #: The ``vitalrisk`` command's exit status when this error ends it.
    exit_status: int = EXIT_FAILURE


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

    exit_status = EXIT_BAD_INPUT


class ServiceUnavailable(VitalsError):
    """Kafka or PostgreSQL does not answer at the configured address (checked before a service starts)."""


class PortInUse(VitalsError):
    """Another process already listens on a port one of ours must bind.

    Parameters
    ----------
    what
        What would listen, e.g. ``"the metrics endpoint"``.
    host, port
        The address.
    setting
        The variable or option that chooses the port, e.g. ``"VITALS_METRICS_PORT"``.

    Examples
    --------
    >>> print(PortInUse("the pager", "127.0.0.1", 9095, "--port"))
    the pager cannot listen on 127.0.0.1:9095: another process uses the port; stop it or choose another with --port
    """

    def __init__(self, what: str, host: str, port: int, setting: str) -> None:
        super().__init__(f"{what} cannot listen on {host}:{port}: another process uses the port; "
                         f"stop it or choose another with {setting}")
        self.port = port


class ProcessDied(VitalsError):
    """A process the command started exited; ``excerpt`` holds the last lines of its log.

    ``vitalrisk`` prints the message as its one line, then the excerpt (indented, traceback
    frames left out), so the user sees why without opening the log.
    """

    def __init__(self, message: str, excerpt: str) -> None:
        super().__init__(message)
        self.excerpt = excerpt


def listen_failed(exc: OSError, *, what: str, host: str, port: int, setting: str) -> VitalsError:
    """The error to raise when binding ``host:port`` failed with ``exc``.

    A taken port is :class:`PortInUse` (exit 1); any other reason (an address that is not this
    machine's, a host name that does not resolve, a privileged port) is a setting to change.

    Examples
    --------
    >>> type(listen_failed(OSError(errno.EADDRINUSE, "in use"), what="x", host="h", port=1, setting="S")).__name__
    'PortInUse'
    >>> print(listen_failed(OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), what="the pager",
    ...                     host="10.9.9.9", port=9095, setting="--host"))
    the pager cannot listen on 10.9.9.9:9095 (Cannot assign requested address); check --host
    """
    if exc.errno == errno.EADDRINUSE:
        return PortInUse(what, host, port, setting)
    return ConfigurationError(f"{what} cannot listen on {host}:{port} ({exc.strerror or exc}); check {setting}")


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its class name when it has none.

    Library errors (libpq's, kafka-python's) often span lines; a one-line report quotes this.

    >>> first_line(OSError("connection refused\\n\\tIs the server running?"))
    'connection refused'
    >>> first_line(TimeoutError())
    'TimeoutError'
    """
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


class AlertError(VitalsError):
    """Root of the alerting service's errors."""


class InvalidPolicy(AlertError, ValueError):
    """An alert policy, route table or receiver list that cannot work; the message states the rule."""

    exit_status = EXIT_BAD_INPUT


class InvalidRequest(AlertError, ValueError):
    """An acknowledgement or silence with bad fields; the message states the rule and the value."""

    exit_status = EXIT_BAD_INPUT


class UnknownAlert(AlertError):
    """No alert has this id (or it belongs to another worker's patients)."""

    exit_status = EXIT_BAD_INPUT


class AlertNotFiring(AlertError):
    """The alert exists but is no longer firing, so there is nothing to acknowledge."""


class UnknownSilence(AlertError):
    """No silence has this id."""

    exit_status = EXIT_BAD_INPUT


class SilenceEnded(AlertError):
    """The silence has already ended (it ran out, or someone ended it)."""


class AlertStoreUnavailable(AlertError):
    """The alert tables could not be read or written."""


class AlertDeliveryFailed(AlertError):
    """A webhook could not be delivered within the retry budget and was dead-lettered.

    Parameters
    ----------
    notification_id
        The idempotency key of the page.
    receiver
        The receiver that did not accept it.
    attempts
        How many attempts were made.
    detail
        The last error (status code or exception), one line.
    """

    def __init__(self, notification_id: str, receiver: str, attempts: int, detail: str) -> None:
        super().__init__(f"webhook {notification_id} to {receiver} failed after {attempts} attempts: {detail}")
        self.notification_id = notification_id
        self.receiver = receiver
        self.attempts = attempts
        self.detail = detail


class SignatureInvalid(AlertError):
    """A webhook signature that does not verify.

    Parameters
    ----------
    reason
        ``missing``, ``malformed``, ``stale`` or ``mismatch``.
    detail
        One line naming the rule that failed.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
