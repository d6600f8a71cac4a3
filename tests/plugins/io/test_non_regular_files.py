"""A FIFO, a device or a socket named where a media file is expected is refused before it is
opened (issue 28: a FIFO in a file cell hung fit, predict and search for ever)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from mmcore_plugins.io import MediaError, check_media, load_audio, read_image, read_text


def _special(tmp_path, kind: str, suffix: str):
    if kind == "fifo":
        path = tmp_path / f"cell{suffix}"
        os.mkfifo(path)
        return path, "FIFO"
    if kind == "device":
        return "/dev/zero", "device"
    path = tmp_path / f"s{suffix}"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    return path, "socket"


def _without_blocking(call, path):
    """``call()``'s exception; fails (after unblocking a reader stuck on the FIFO ``path``) when it blocks."""
    outcome = {}

    def run():
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():
        if os.path.exists(path) and not str(path).startswith("/dev/"):
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # the reader's open() returns; it reads EOF
            os.close(fd)
        pytest.fail("the reader blocked on a special file")
    return outcome.get("error")


READERS = {
    "image": (".png", lambda p: read_image(p)),
    "audio": (".wav", lambda p: load_audio(p)),
    "text": (".txt", lambda p: read_text(p)),
    "check image": (".png", lambda p: check_media(p, "image")),
    "check audio": (".wav", lambda p: check_media(p, "audio")),
}


@pytest.mark.parametrize("kind", ["fifo", "device", "socket"])
@pytest.mark.parametrize("reader", list(READERS))
def test_a_special_file_is_refused_before_it_is_opened(tmp_path, kind, reader):
    suffix, read = READERS[reader]
    path, word = _special(tmp_path, kind, suffix)
    error = _without_blocking(lambda: read(path), path)
    assert isinstance(error, MediaError), error
    assert word in str(error) and str(path) in str(error)
