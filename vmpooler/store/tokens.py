"""API tokens (the original's ``vmpooler__token__<token>`` hashes) and our per-user index of them."""

from __future__ import annotations

from typing import Any

from vmpooler import keys
from vmpooler.store.connection import translated

__all__ = ["Tokens"]


class Tokens:
    """Create, read, use and delete tokens; list a user's tokens through ``vmpooler__user_tokens__<user>``."""

    def __init__(self, client: Any) -> None:
        self._redis: Any = client

    @translated
    def get(self, token: str) -> dict[str, str]:
        """The token's hash (``user``, ``created``, ``last`` use, and ours: ``admin``, ``admin_group``);
        empty when there is no such token."""
        return dict(self._redis.hgetall(keys.token(token)))

    @translated
    def touch(self, token: str, now: str) -> None:
        self._redis.hset(keys.token(token), "last", now)

    @translated
    def create(
        self, token: str, user: str, now: str, *, admin: bool = False, admin_group: str | None = None
    ) -> None:
        """Record a new token of ``user`` made at ``now``.

        Args:
            admin: the user was an admin when the token was made (field ``admin`` = ``"true"``; left
                out otherwise, so that a non-admin's token is the original's hash).
            admin_group: the ``admin_groups`` entry that made the user an admin (field ``admin_group``).
        """
        fields = {"user": user, "created": now}
        if admin:
            fields["admin"] = "true"
        if admin_group:
            fields["admin_group"] = admin_group
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.token(token), mapping=fields)
            pipe.sadd(keys.user_tokens(user), token)
            pipe.execute()

    @translated
    def delete(self, token: str) -> bool:
        user = self._redis.hget(keys.token(token), "user")
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.token(token))
            if user is not None:
                pipe.srem(keys.user_tokens(user), token)
            return bool(pipe.execute()[0])

    @translated
    def of_user(self, user: str) -> dict[str, dict[str, str]]:
        """Every token of ``user`` with its fields, read through the per-user index."""
        if not self._redis.exists(keys.USER_TOKENS_INDEXED):
            self._index_tokens()
        tokens = sorted(self._redis.smembers(keys.user_tokens(user)))
        with self._redis.pipeline(transaction=False) as pipe:
            for token in tokens:
                pipe.hgetall(keys.token(token))
            found = dict(zip(tokens, pipe.execute(), strict=True))
        stale = [token for token, data in found.items() if data.get("user") != user]
        if stale:  # deleted (or reassigned) by a process that does not keep the index: the original
            self._redis.srem(keys.user_tokens(user), *stale)
        return {token: dict(data) for token, data in found.items() if token not in stale}

    def _index_tokens(self) -> None:
        """Index every existing token by user, once (tokens made by the original or an older version)."""
        prefix_len = len(keys.token(""))
        cursor: int | str = 0
        while True:  # one SCAN page, its users in one pipeline, their index entries in another
            cursor, found = self._redis.scan(cursor, match=keys.token_pattern(), count=2_000)
            with self._redis.pipeline(transaction=False) as pipe:
                for key in found:
                    pipe.hget(key, "user")
                users = pipe.execute()
            with self._redis.pipeline(transaction=False) as pipe:
                for key, user in zip(found, users, strict=True):
                    if user is not None:
                        pipe.sadd(keys.user_tokens(user), key[prefix_len:])
                pipe.execute()
            if not int(cursor):
                break
        self._redis.set(keys.USER_TOKENS_INDEXED, "1")
