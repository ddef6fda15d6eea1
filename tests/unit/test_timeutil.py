"""Reading the original's timestamps."""

from __future__ import annotations

import os
import time

from vmpooler.timeutil import parse_time, rfc3339


def test_parse_time_reads_the_originals_format() -> None:
    assert parse_time("2015-04-28 19:17:47 -0700") == 1430273867.0
    assert parse_time("2015-04-28 19:17:47 +0530") == 1430228867.0


def test_a_timestamp_that_names_no_time_is_unreadable() -> None:
    assert parse_time("2026-02-30 10:00:00 +0000") is None  # no such day
    assert parse_time("2026-01-01 24:00:00 +0000") is None
    # no time zone is a day away: this raised datetime's ValueError, and a GET of the VM answered 500
    assert parse_time("2026-01-01 10:00:00 +2400") is None


def test_rfc3339_follows_a_change_of_the_local_time_zone() -> None:
    """Its answers are kept per second and time zone: one printed before a change of zone is not
    handed out after it."""
    before = os.environ.get("TZ")
    try:
        os.environ["TZ"] = "UTC"
        time.tzset()
        assert rfc3339(1430273867) == "2015-04-29T02:17:47+00:00"
        os.environ["TZ"] = "Asia/Kolkata"
        time.tzset()
        assert rfc3339(1430273867) == "2015-04-29T07:47:47+05:30"
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_parse_time_answers_the_same_when_asked_again() -> None:
    assert parse_time("2015-04-28 19:17:47 +0530") == parse_time("2015-04-28 19:17:47 +0530") == 1430228867.0
    assert parse_time("2015-04-28 19:17:47 -0700") == 1430273867.0
