"""The typed errors and their one mapping to wire codes."""

from __future__ import annotations

import pytest

from zmqproc import errors
from zmqproc.errors import ERROR_CLASSES, ERROR_CODES, Busy, DeadlineExceeded, ProcessingError, error_from_wire


@pytest.mark.parametrize("code", ERROR_CODES)
def test_every_wire_code_comes_back_as_its_own_class(code):
    err = error_from_wire(code, "what happened", "req-7")
    assert type(err) is ERROR_CLASSES[code] and err.code == code
    assert err.message == "what happened" and err.request_id == "req-7"
    assert str(err) == f"{code}: what happened"


def test_codes_are_unique_and_every_processing_error_class_has_one():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, ProcessingError) and c is not ProcessingError]
    assert sorted(c.code for c in classes) == sorted(ERROR_CODES)
    assert len(set(ERROR_CODES)) == len(ERROR_CODES)


def test_an_unknown_code_stays_a_plain_processing_error_with_that_code():
    err = error_from_wire("quota_exceeded", "over quota")
    assert type(err) is ProcessingError and err.code == "quota_exceeded" and str(err) == "quota_exceeded: over quota"
    assert ProcessingError.code == "internal", "the instance's code does not leak into the class"


@pytest.mark.parametrize(("code", "message"), [(None, "x"), (42, None), (["busy"], "")])
def test_garbage_code_or_message_never_raises(code, message):
    err = error_from_wire(code, message)
    assert isinstance(err, ProcessingError) and err.code == str(code)


def test_an_empty_message_falls_back_to_the_code():
    assert str(Busy()) == "busy: busy" and Busy().message == "busy"


def test_a_server_deadline_is_also_a_timeout_error():
    with pytest.raises(TimeoutError):
        raise error_from_wire("timeout", "waited too long")
    assert issubclass(DeadlineExceeded, ProcessingError)
