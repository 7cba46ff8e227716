"""The one-line pieces of error messages (errors.py), shared by every room that reports an OSError or a wrapped exception."""

from __future__ import annotations

import errno

import pytest

from mspn_cli.errors import first_line, unreadable_reason


def test_first_line_keeps_the_message_and_drops_appended_traces():
    exc = RuntimeError("\n  the graph has no input 'images'  \n\nC++ backtrace:\n  #0 0x7f...\n")
    assert first_line(exc) == "the graph has no input 'images'"


def test_first_line_of_an_exception_without_a_message_is_its_type():
    assert first_line(ValueError()) == "ValueError"
    assert first_line(KeyError("")) == "''"  # KeyError quotes its key: the message is not empty


def test_unreadable_reason_names_the_common_cases_and_keeps_the_rest():
    assert unreadable_reason(FileNotFoundError(errno.ENOENT, "No such file or directory")) == "file not found"
    assert unreadable_reason(IsADirectoryError(errno.EISDIR, "Is a directory")) == "is a folder, not a file"
    assert unreadable_reason(PermissionError(errno.EACCES, "Permission denied")) == "permission denied"
    assert unreadable_reason(OSError(errno.EIO, "Input/output error")) == "cannot read (Input/output error)"


def test_an_unreadable_config_file_gets_the_shared_wording(tmp_path, monkeypatch):
    from mspn_cli import config_checks
    from mspn_cli.errors import ConfigError

    config = tmp_path / "pose.toml"
    config.write_text("[model]\n")

    def refused(*args, **kwargs):  # as a permission bit would, for any user (the tests may run as root)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(config_checks, "open", refused, raising=False)
    with pytest.raises(ConfigError, match=r"config file .*pose\.toml: permission denied$"):
        config_checks.read_toml(config)
