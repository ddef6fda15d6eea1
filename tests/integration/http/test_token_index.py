"""``GET /token`` reads a per-user index, built once from tokens it did not write (the original's)."""

from __future__ import annotations

from tests.integration.http.conftest import add_token
from tests.integration.http.test_token import ALICE, BOB
from vmpooler import keys


def test_tokens_of_the_original_are_indexed_once_and_listed(auth_api, redis):
    with redis.pipeline(transaction=False) as pipe:
        for n in range(3_000):  # written as the original writes them: no index
            pipe.hset(keys.token(f"other{n:05d}"), mapping={"user": f"user{n % 50}", "created": "x"})
        pipe.execute()
    add_token(redis, "aliceold1", "alice")
    add_token(redis, "aliceold2", "alice")
    assert not redis.exists(keys.USER_TOKENS_INDEXED)
    resp = auth_api.get("/api/v3/token", headers=ALICE)
    assert resp.status_code == 200
    assert set(resp.json) == {"ok", "aliceold1", "aliceold2"}
    assert redis.exists(keys.USER_TOKENS_INDEXED)
    assert redis.smembers(keys.user_tokens("alice")) == {"aliceold1", "aliceold2"}
    assert redis.scard(keys.user_tokens("user7")) == 60


def test_created_and_deleted_tokens_keep_the_index_true(auth_api, redis):
    token = auth_api.post("/api/v3/token", headers=ALICE).json["token"]
    assert redis.smembers(keys.user_tokens("alice")) == {token}
    assert auth_api.delete(f"/api/v3/token/{token}", headers=ALICE).status_code == 200
    assert not redis.exists(keys.user_tokens("alice"))
    assert auth_api.get("/api/v3/token", headers=ALICE).status_code == 404


def test_a_token_deleted_by_another_process_drops_out_of_the_index(auth_api, redis):
    kept = auth_api.post("/api/v3/token", headers=BOB).json["token"]
    gone = auth_api.post("/api/v3/token", headers=BOB).json["token"]
    redis.delete(keys.token(gone))  # as the original's DELETE does: it keeps no index
    assert set(auth_api.get("/api/v3/token", headers=BOB).json) == {"ok", kept}
    assert redis.smembers(keys.user_tokens("bob")) == {kept}
