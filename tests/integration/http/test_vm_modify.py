"""``PUT /vm/<host>``: every failure message, word for word as the original's.

The original interpolates the request's values into its messages, so they appear as Ruby prints them
(``nil`` as nothing, ``true``, ``1.0e+20``, ``{"a"=>1}``); clients may match on these texts. Each case
also checks that nothing was written.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.http.conftest import DEB, add_running, dump, with_config

pytestmark = pytest.mark.integration


def _put(api, body, *, vm="d1", version=3):
    return api.put(f"/api/v{version}/vm/{vm}", body=body if isinstance(body, bytes) else json.dumps(body))


def _refused(api, redis, body, *, version=3):
    """The JSON answer of a PUT that must be a 400 and write nothing."""
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = _put(api, body, version=version)
    assert resp.status_code == 400
    assert dump(redis) == before
    return resp.json


# -- v3 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("blue", "blue"),
        (5, "5"),
        (-7, "-7"),
        (2.5, "2.5"),
        (100.0, "100.0"),
        (1e16, "1.0e+16"),
        (1e15, "1000000000000000.0"),
        (0.0001, "0.0001"),
        (0.00001, "1.0e-05"),
        (-1.5e-7, "-1.5e-07"),
        (None, ""),
        (True, "true"),
        (False, "false"),
        ([], "[]"),
        ([1, "x", None, False, 0.5], '[1, "x", nil, false, 0.5]'),
        ({}, "{}"),
        ({"a": {"b": [1]}}, '{"a"=>{"b"=>[1]}}'),
        ({"q": 'say "hi"\n\t#{x} \\ \x01'}, '{"q"=>"say \\"hi\\"\\n\\t\\#{x} \\\\ \\u0001"}'),
        ("é ünïcode", "é ünïcode"),
    ],
)
def test_unknown_argument_names_the_value_as_ruby_prints_it(api, redis, value, shown):
    assert _refused(api, redis, {"colour": value}) == {"ok": False, "failure": [f"Unknown argument {shown}."]}


@pytest.mark.parametrize(
    ("tags", "failures"),
    [
        ({"": "v"}, ["Tag key is required"]),
        ({"k" * 51: "v"}, ["Tag key too long"]),
        ({"a b": "v"}, ["Invalid tag key format"]),
        ({"k": "v" * 256}, ["Tag value too long"]),
        ({"k": "tab\there"}, ["Tag value contains invalid characters"]),
        ({"k": ["list"]}, ["Tag value of k must be a string"]),
        ({"k": False}, ["Tag value of k must be a string"]),
        ({"bad!": "1", "ok": "2", "": "3"}, ["Invalid tag key format", "Tag key is required"]),
    ],
)
def test_tag_messages(api, redis, tags, failures):
    assert _refused(api, redis, {"tags": tags}) == {"ok": False, "failure": failures}


def test_tag_failures_come_before_the_unsupported_tags_message(make_api, redis):
    api = make_api(with_config("allowed_tags: [project]"))
    body = {"tags": {"project": "x", "bad key": "y", "other": "z"}}
    assert _refused(api, redis, body) == {
        "ok": False,
        "failure": [
            "Invalid tag key format",
            'You provided unsuppored tags ({"project"=>"x", "bad key"=>"y", "other"=>"z"}).',
        ],
    }


def test_every_failure_in_body_order(make_api, redis):
    api = make_api(with_config("max_lifetime_upper_limit: 10"))
    body = {"owner": "me", "tags": [1], "lifetime": "11", "x": None}
    assert _refused(api, redis, body) == {
        "ok": False,
        "failure": [
            "Unknown argument me.",
            "You provided tags ([1]) as something other than a hash.",
            "You provided a lifetime (11) that exceeds the configured maximum of 10.",
            "Unknown argument .",
        ],
    }


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"a": {"b": {"c": {"d": {"e": {}}}}}}', "Request body too complex"),
        (b"[]", "Request body must be a JSON object"),
        (b'"text"', "Request body must be a JSON object"),
        (b"null", "Request body must be a JSON object"),
        (b'{"lifetime": NaN}', "Invalid JSON: unexpected token NaN"),
        (b'{"lifetime": -Infinity}', "Invalid JSON: unexpected token -Infinity"),
    ],
)
def test_body_errors(api, redis, raw, error):
    assert _refused(api, redis, raw) == {"ok": False, "error": error}


def test_body_nested_five_deep_is_not_too_complex(api, redis):
    assert _refused(api, redis, b'{"x": {"a": {"b": {"c": {}}}}}') == {
        "ok": False,
        "failure": ['Unknown argument {"a"=>{"b"=>{"c"=>{}}}}.'],
    }


def test_hostname_too_long(api, redis):
    name = ".".join(["a" * 60] * 5)  # 304 characters
    resp = _put(api, {"lifetime": 2}, vm=name)
    assert resp.status_code == 400
    assert resp.json == {"ok": False, "error": "Hostname too long"}


# -- v1 and v2 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(("value", "shown"), [(None, ""), (True, "true"), (1.5, "1.5"), ("-2", "-2")])
def test_v1_v2_lifetime_message_shows_the_value_as_ruby(api, redis, version, value, shown):
    assert _refused(api, redis, {"lifetime": value}, version=version) == {
        "ok": False,
        "failure": [f"You provided a lifetime ({shown}) but you must provide a positive number."],
    }


@pytest.mark.parametrize("version", [1, 2])
def test_v1_v2_other_messages(make_api, redis, version):
    api = make_api(with_config("max_lifetime_upper_limit: 10\nallowed_tags: [project]"))
    assert _refused(api, redis, {"lifetime": 12, "tags": "x", "y": 1}, version=version) == {
        "ok": False,
        "failure": [
            "You provided a lifetime (12) that exceeds the configured maximum of 10.",
            "You provided tags (x) as something other than a hash.",
            "Unknown argument 1.",
        ],
    }
    assert _refused(api, redis, {"tags": {"other": "z"}}, version=version) == {
        "ok": False,
        "failure": ['You provided unsuppored tags ({"other"=>"z"}).'],
    }


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("raw", [b"", b"  \n"])
def test_v1_v2_empty_body_is_a_bare_400(api, redis, version, raw):
    """v1/v2 parsed every body with ``JSON.parse``, which refuses an empty one."""
    assert _refused(api, redis, raw, version=version) == {"ok": False}


def test_v3_empty_body_changes_nothing_and_succeeds(api, redis):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = _put(api, b"")
    assert resp.status_code == 200
    assert resp.json == {"ok": True}
    assert dump(redis) == before
