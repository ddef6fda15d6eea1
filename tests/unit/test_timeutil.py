"""Reading the original's timestamps."""

from __future__ import annotations

from vmpooler.timeutil import parse_time


def test_parse_time_reads_the_originals_format() -> None:
    assert parse_time("2015-04-28 19:17:47 -0700") == 1430273867.0
    assert parse_time("2015-04-28 19:17:47 +0530") == 1430228867.0


def test_a_timestamp_that_names_no_time_is_unreadable() -> None:
    assert parse_time("2026-02-30 10:00:00 +0000") is None  # no such day
    assert parse_time("2026-01-01 24:00:00 +0000") is None
    # no time zone is a day away: this raised datetime's ValueError, and a GET of the VM answered 500
    assert parse_time("2026-01-01 10:00:00 +2400") is None
