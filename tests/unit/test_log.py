"""Log lines stay one line whatever a client sends (text or JSON), carry their context, and tokens never
reach a log."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from vmpooler.log import EscapingFormatter, JsonFormatter, get_logger, redact_path, setup_logging


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


# -- context and the JSON format ---------------------------------------------------------------------


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """The records logged under ``tests.unit.test_log.ctx``, kept rather than written."""
    kept: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = kept.append  # type: ignore[method-assign]
    logger = logging.getLogger("tests.unit.test_log.ctx")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield kept
    logger.handlers.clear()


def test_the_text_format_puts_the_context_first(records: list[logging.LogRecord]) -> None:
    log = get_logger("tests.unit.test_log.ctx", pool="debian", vm="ab-cd", request=None)
    log.info("cloned in %d seconds", 3)
    log.bind(request="r-1").warning("queued\nagain")
    log.info("taken", extra={"request": "r-2", "provider": "vs1"})
    formatter = EscapingFormatter("%(levelname)s %(message)s")
    assert [formatter.format(r) for r in records] == [
        "INFO [pool=debian vm=ab-cd] cloned in 3 seconds",
        "WARNING [pool=debian vm=ab-cd request=r-1] queued\\nagain",
        "INFO [pool=debian vm=ab-cd request=r-2 provider=vs1] taken",
    ]


def test_a_json_record_is_one_line_with_its_context_and_traceback(records: list[logging.LogRecord]) -> None:
    log = get_logger("tests.unit.test_log.ctx", pool="debian", vm="ab-cd", request="r-1")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.exception("clone of %s failed", "ab-cd\u2028x")
    line = JsonFormatter().format(records[0])
    assert "\n" not in line and "\u2028" not in line and line.isascii()
    entry = json.loads(line)
    assert entry.keys() == {
        *("time", "level", "logger", "message", "process", "pid", "thread"),
        *("pool", "vm", "request", "exc"),
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    moment = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert abs(moment.timestamp() - records[0].created) < 0.001
    assert (entry["level"], entry["logger"]) == ("ERROR", "tests.unit.test_log.ctx")
    assert entry["message"] == "clone of ab-cd\u2028x failed"
    assert (entry["pool"], entry["vm"], entry["request"]) == ("debian", "ab-cd", "r-1")
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].endswith("ValueError: bad\nvalue")


def test_a_plain_logger_record_has_no_context_fields(records: list[logging.LogRecord]) -> None:
    logging.getLogger("tests.unit.test_log.ctx").info("started %s", "x", extra={"pool": "a"})
    entry = json.loads(JsonFormatter().format(records[0]))
    assert (entry["message"], entry["pool"]) == ("started x", "a")
    assert "exc" not in entry and "vm" not in entry


def test_an_unknown_format_is_refused_before_anything_changes() -> None:
    handlers = list(logging.getLogger().handlers)
    with pytest.raises(ValueError, match="text, json"):
        setup_logging(fmt="xml")
    assert logging.getLogger().handlers == handlers
