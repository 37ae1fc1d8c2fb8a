"""The errors' root (kernel/errors.py): one hierarchy, drawn in the module docstring, whose exit statuses
say who must act (2: what the user typed or configured, 1: something outside), and one-line messages."""

from __future__ import annotations

import errno
import inspect
from types import ModuleType

import pytest

import infra.errors
import kernel.errors
import models.errors
import sinks.errors
from kernel.errors import (EXIT_BAD_INPUT, EXIT_FAILURE, AlertDeliveryFailed, AlertError, AlertNotFiring,
                           AlertStoreUnavailable, ConfigurationError, InvalidMessage, InvalidPolicy, InvalidRequest,
                           PortInUse, ProcessDied, ServiceUnavailable, SignatureInvalid, SilenceEnded, UnknownAlert,
                           UnknownSilence, VitalsError, first_line, listen_failed)

EXIT_STATUS = {
    VitalsError: EXIT_FAILURE, InvalidMessage: EXIT_FAILURE, ConfigurationError: EXIT_BAD_INPUT,
    ServiceUnavailable: EXIT_FAILURE, PortInUse: EXIT_FAILURE, ProcessDied: EXIT_FAILURE, AlertError: EXIT_FAILURE,
    InvalidPolicy: EXIT_BAD_INPUT, InvalidRequest: EXIT_BAD_INPUT, UnknownAlert: EXIT_BAD_INPUT,
    AlertNotFiring: EXIT_FAILURE, AlertStoreUnavailable: EXIT_FAILURE, AlertDeliveryFailed: EXIT_FAILURE,
    SignatureInvalid: EXIT_FAILURE, UnknownSilence: EXIT_BAD_INPUT, SilenceEnded: EXIT_FAILURE,
}


def _classes(module: ModuleType) -> list[type[BaseException]]:
    """The exceptions ``module`` defines (not those it imports)."""
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, BaseException) and c.__module__ == module.__name__]


def test_the_exit_statuses_are_as_the_hierarchy_says() -> None:
    assert (EXIT_FAILURE, EXIT_BAD_INPUT) == (1, 2)
    assert set(_classes(kernel.errors)) == set(EXIT_STATUS), "every kernel error has its status here"
    assert {c: c.exit_status for c in EXIT_STATUS} == EXIT_STATUS


def test_the_docstring_draws_every_kernel_error() -> None:
    drawn = kernel.errors.__doc__ or ""
    assert [c.__name__ for c in _classes(kernel.errors) if c.__name__ not in drawn] == []


@pytest.mark.parametrize("module", [models.errors, sinks.errors, infra.errors], ids=lambda m: m.__name__)
def test_every_packages_errors_derive_from_the_root_with_an_exit_status(module: ModuleType) -> None:
    for error in _classes(module):
        assert issubclass(error, VitalsError), error
        assert error.exit_status in (EXIT_FAILURE, EXIT_BAD_INPUT), error


def test_the_alerts_bad_input_errors_are_value_errors_too() -> None:
    assert issubclass(InvalidPolicy, ValueError) and issubclass(InvalidRequest, ValueError)
    assert all(issubclass(c, AlertError) for c in (InvalidPolicy, InvalidRequest, UnknownAlert, AlertNotFiring,
                                                   AlertStoreUnavailable, AlertDeliveryFailed, SignatureInvalid))


def test_errors_with_fields_keep_them_and_say_them_on_one_line() -> None:
    invalid = InvalidMessage("not_json", "not valid UTF-8 JSON")
    assert (str(invalid), invalid.reason, invalid.detail) == ("not_json: not valid UTF-8 JSON", "not_json",
                                                              "not valid UTF-8 JSON")
    failed = AlertDeliveryFailed("al-1:firing", "pager", 7, "HTTP 503")
    assert str(failed) == "webhook al-1:firing to pager failed after 7 attempts: HTTP 503"
    assert (failed.notification_id, failed.receiver, failed.attempts, failed.detail) == ("al-1:firing", "pager", 7,
                                                                                         "HTTP 503")
    signature = SignatureInvalid("stale", "signed 600 s ago")
    assert (str(signature), signature.reason) == ("stale: signed 600 s ago", "stale")
    died = ProcessDied("the worker exited with status 1", "Traceback ...")
    assert (str(died), died.excerpt) == ("the worker exited with status 1", "Traceback ...")
    assert PortInUse("the pager", "127.0.0.1", 9095, "--port").port == 9095


@pytest.mark.parametrize("code,error", [(errno.EADDRINUSE, PortInUse), (errno.EADDRNOTAVAIL, ConfigurationError),
                                        (errno.EACCES, ConfigurationError)])
def test_a_failed_bind_is_a_taken_port_or_a_setting_to_change(code: int, error: type[VitalsError]) -> None:
    raised = listen_failed(OSError(code, "reason"), what="the metrics endpoint", host="127.0.0.1", port=80,
                           setting="VITALS_METRICS_PORT")
    assert type(raised) is error
    assert "127.0.0.1:80" in str(raised) and "VITALS_METRICS_PORT" in str(raised) and "\n" not in str(raised)


def test_a_report_quotes_the_first_line_of_a_library_error() -> None:
    assert first_line(OSError("  \n  connection refused \n\tIs the server running?")) == "connection refused"
    assert first_line(ValueError("")) == "ValueError"
