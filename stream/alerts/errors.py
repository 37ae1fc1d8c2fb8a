"""Errors of the alerting service.

::

    VitalsError
     └── AlertError                 root of everything alerting raises
          ├── InvalidPolicy         thresholds, timers or routes that cannot work (also a ValueError)
          ├── InvalidRequest        a bad acknowledgement or silence: empty name, bad duration (also a ValueError)
          ├── UnknownAlert          an acknowledgement for an alert id no one knows
          ├── AlertNotFiring        an acknowledgement for an alert that is resolved
          ├── AlertStoreUnavailable the alert tables could not be read or written
          ├── AlertDeliveryFailed   a webhook was given up on and dead-lettered
          └── SignatureInvalid      a webhook's signature is missing, stale or wrong
                                    (``reason`` is a short code: ``missing``, ``malformed``,
                                    ``stale``, ``mismatch``)

``vitalrisk`` exits with status 2 for InvalidPolicy, InvalidRequest and UnknownAlert (the input
must change), 1 for the rest (:attr:`kernel.errors.VitalsError.exit_status`).
"""

from __future__ import annotations

from kernel.errors import EXIT_BAD_INPUT, VitalsError


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
