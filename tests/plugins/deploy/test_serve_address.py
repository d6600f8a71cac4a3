"""`mmcore serve --port P` where P is taken: one line naming host and port, exit 2, before the model
is loaded; and a port taken between that check and uvicorn's own bind (``--workers N``) is the same
error, not uvicorn's log line and exit 3."""

from __future__ import annotations

import socket

import pytest

from mmcore.cli import main
from mmcore_plugins.deploy.serve import AddressInUse, listen_socket, serve


@pytest.fixture
def taken_port():
    with socket.socket() as held:  # bound and listening, as another server would be
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_a_port_in_use_is_one_line_exit_2_before_the_model_is_loaded(taken_port, tmp_path, capsys):
    # the path does not exist: the port is checked first, so that is what is reported
    assert main(["serve", str(tmp_path / "no-run"), "--port", str(taken_port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"mmcore serve: cannot listen on 127.0.0.1:{taken_port}: the port is already in use "
                   f"(another server?); choose another --port")


def test_the_socket_checked_is_the_one_served_and_a_free_port_binds(taken_port):
    with pytest.raises(AddressInUse, match=f"127.0.0.1:{taken_port}: the port is already in use"):
        listen_socket("127.0.0.1", taken_port)
    sock = listen_socket("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_a_port_taken_after_the_check_is_the_same_error_when_uvicorn_binds(taken_port):
    # --workers 2: uvicorn's supervisor binds the port itself, after the check's socket is closed
    free = listen_socket("127.0.0.1", 0)
    with pytest.raises(AddressInUse, match=f"127.0.0.1:{taken_port}: the port is already in use"):
        serve({"path": "unused"}, workers=2, host="127.0.0.1", port=taken_port, log_level="critical", sock=free)
    assert free.fileno() == -1  # closed
