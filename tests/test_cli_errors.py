"""Errors of the user's environment reach the user as one line: a filesystem error names the path
(a link whose target is gone is called that: ``mkdir`` alone says "File exists" about the link), a
bad ``TUWEN_*`` variable names the variable and its value, a port ``tuwen serve`` cannot listen on
is said before any model loads."""

from __future__ import annotations

import errno
import socket

import pytest

from common.errors import describe_os_error
from tuwen.cli import main


def test_a_broken_link_is_named_with_its_missing_target(tmp_path):
    link = tmp_path / "converted"
    link.symlink_to(tmp_path / "unmounted")
    with pytest.raises(OSError) as raised:
        (link / "tiny").mkdir(parents=True, exist_ok=True)
    line = describe_os_error(raised.value)
    assert line == (
        f"{link} is a link to {tmp_path / 'unmounted'}, which does not exist (mount it or remove the link)"
    )


def test_other_filesystem_errors_keep_their_own_words(tmp_path):
    error = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "index"))
    assert describe_os_error(error) == f"[Errno 28] No space left on device: '{tmp_path / 'index'}'"


def test_a_command_on_a_broken_cache_link_says_so_in_one_line(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "converted").symlink_to(tmp_path / "unmounted")
    code = main(["export-model", "--home", str(home), "--model", "tiny", "--format", "onnx"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (
        f"tuwen export-model: error: {home / 'converted'} is a link to {tmp_path / 'unmounted'}, "
        "which does not exist (mount it or remove the link) (run with -v for the traceback)"
    )


def test_a_bad_environment_variable_is_named_with_its_value(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TUWEN_QUERY_BATCH_MAX", "abc")
    monkeypatch.setenv("TUWEN_BACKEND", "nosuch")
    code = main(["corpus", "list", "--home", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("tuwen corpus: error: ")
    assert "TUWEN_BACKEND='nosuch': Input should be 'auto', 'torch', 'onnx' or 'openvino'" in err[0]
    assert "TUWEN_QUERY_BATCH_MAX='abc': Input should be a valid integer" in err[0]


def test_serve_on_a_port_in_use_says_so_before_loading_anything(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--home", str(tmp_path), "--port", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"tuwen serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert not (tmp_path / "store.db").exists()  # refused before the store was opened


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_that_is_no_port(tmp_path, capsys, port):
    with pytest.raises(SystemExit) as raised:
        main(["serve", "--home", str(tmp_path), f"--port={port}"])
    assert raised.value.code == 2
    assert f"argument --port: a port is a number from 0 to 65535, not '{port}'" in capsys.readouterr().err
