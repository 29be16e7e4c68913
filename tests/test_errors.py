"""The typed errors and their one mapping to wire codes."""

from __future__ import annotations

import pytest

from zmqproc import errors
from zmqproc.errors import ERROR_CLASSES, ERROR_CODES, Busy, DeadlineExceeded, ProcessingError, error_from_wire


@pytest.mark.parametrize("code", ERROR_CODES)
def test_every_wire_code_comes_back_as_its_own_class(code):
    err = error_from_wire({"code": code, "message": "what happened"}, "req-7")
    assert type(err) is ERROR_CLASSES[code] and err.code == code
    assert err.message == "what happened" and err.request_id == "req-7"
    assert str(err) == f"{code}: what happened"


def test_codes_are_unique_and_every_processing_error_class_has_one():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, ProcessingError) and c is not ProcessingError]
    assert sorted(c.code for c in classes) == sorted(ERROR_CODES)
    assert len(set(ERROR_CODES)) == len(ERROR_CODES)


def test_an_unknown_code_stays_a_plain_processing_error_with_that_code():
    err = error_from_wire({"code": "quota_exceeded", "message": "over quota"})
    assert type(err) is ProcessingError and err.code == "quota_exceeded" and str(err) == "quota_exceeded: over quota"
    assert ProcessingError.code == "internal", "the instance's code does not leak into the class"


@pytest.mark.parametrize("error", [None, "busy", {"code": None, "message": "x"}, {"code": 42}, {"code": ["busy"], 1: 2}])
def test_a_garbage_error_map_never_raises(error):
    err = error_from_wire(error)
    assert isinstance(err, ProcessingError) and err.code not in ERROR_CODES


def test_an_empty_message_falls_back_to_the_code():
    assert str(Busy()) == "busy: busy" and Busy().message == "busy"


def test_a_server_deadline_is_also_a_timeout_error():
    with pytest.raises(TimeoutError):
        raise error_from_wire({"code": "timeout", "message": "waited too long"})
    assert issubclass(DeadlineExceeded, ProcessingError)


def test_extra_keys_of_the_error_map_travel_both_ways():
    leaving = Busy.shutting_down()
    back = error_from_wire(leaving.to_wire())
    assert isinstance(back, Busy) and back.server_leaving and back.details == {"shutting_down": True}
    assert not error_from_wire({"code": "busy", "message": "full"}).server_leaving


def test_one_tree():
    from zmqproc import errors as e

    assert issubclass(e.ProcessingError, e.ZmqprocError) and issubclass(e.ClientError, e.ZmqprocError)
    for cls in (e.RequestTimeout, e.ConnectionLost, e.ServerCrashed, e.MalformedReply, e.AuthenticationFailed, e.TunnelDied):
        assert issubclass(cls, e.ClientError) and not issubclass(cls, e.ProcessingError)
    assert issubclass(e.RequestTimeout, TimeoutError) and issubclass(e.ConnectionLost, ConnectionError)


def test_every_error_class_is_exported_from_the_package():
    import zmqproc
    from zmqproc import errors as e

    classes = {n for n, c in vars(e).items() if isinstance(c, type) and issubclass(c, e.ZmqprocError)}
    assert classes <= set(zmqproc.__all__)
