"""Log lines stay one line whatever a client sends, and tokens never reach a log."""

from __future__ import annotations

import io
import logging

import pytest

from vmpooler.log import EscapingFormatter, redact_path


@pytest.fixture
def capture() -> tuple[logging.Logger, io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(EscapingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.unit.test_log")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, buffer


def test_control_characters_from_clients_are_escaped(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = capture
    logger.info("ldap: authentication of %s failed", "bob\r\nINFO admin logged in\x00\u2028")
    assert buffer.getvalue() == (
        "INFO ldap: authentication of bob\\r\\nINFO admin logged in\\x00\\u2028 failed\n"
    )


def test_a_traceback_keeps_its_lines(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = capture
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("failed for %s", "a\nb")
    first, *rest = buffer.getvalue().splitlines()
    assert first == "ERROR failed for a\\nb"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: bad"


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/api/v3/token/0123456789abcdef", "/api/v3/token/0123…"),
        ("/api/v1/token/0123456789abcdef?x=1", "/api/v1/token/0123…?x=1"),
        ("/api/v3/token/ab", "/api/v3/token/ab…"),
        ("/api/v3/token", "/api/v3/token"),
        ("/api/v3/vm/host1", "/api/v3/vm/host1"),
    ],
)
def test_tokens_in_paths_are_cut_to_four_characters(path: str, logged: str) -> None:
    assert redact_path(path) == logged
