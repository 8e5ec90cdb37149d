"""Keys, API tokens, dashboard sessions and grants."""

from __future__ import annotations

from gitd.core.errors import Conflict, GitdError, NotFound
from gitd.core.store.records import Key, Token, _key, now


class AccessRecords:
    """Part of Store."""

    # keys

    def add_key(self, name: str, fingerprint: str, public_key: str, is_admin: bool) -> Key:
        with self._tx() as db:
            if db["keys"].count_where("name = ?", [name]):
                raise GitdError(f"a key named {name!r} already exists")
            if db["keys"].count_where("fingerprint = ?", [fingerprint]):
                raise GitdError("that public key is already registered")
            row = {"name": name, "fingerprint": fingerprint, "public_key": public_key,
                   "is_admin": int(is_admin), "created_at": now()}
            db["keys"].insert(row)
        return _key(row)

    def key_by_fingerprint(self, fingerprint: str) -> Key | None:
        with self._lock:
            rows = list(self.db["keys"].rows_where("fingerprint = ?", [fingerprint]))
        return _key(rows[0]) if rows else None

    def get_key(self, name: str) -> Key:
        with self._lock:
            rows = list(self.db["keys"].rows_where("name = ?", [name]))
        if not rows:
            raise NotFound(f"no key named {name!r}")
        return _key(rows[0])

    def list_keys(self) -> list[Key]:
        with self._lock:
            return [_key(r) for r in self.db["keys"].rows_where(order_by="name")]

    def remove_key(self, name: str, keep_an_admin: bool = False) -> None:
        """With `keep_an_admin`, refuse to remove the last admin key."""
        with self._tx() as db:
            rows = list(db["keys"].rows_where("name = ?", [name]))
            if not rows:
                raise NotFound(f"no key named {name!r}")
            if keep_an_admin and rows[0]["is_admin"] and db["keys"].count_where("is_admin = 1") == 1:
                raise GitdError(f"{name} is the last admin key: add another admin key first")
            db["grants"].delete_where("key_name = ?", [name])
            db["tokens"].delete_where("key_name = ?", [name])
            db["keys"].delete(name)

    def admin_count(self) -> int:
        with self._lock:
            return self.db["keys"].count_where("is_admin = 1")

    # API tokens

    def add_token(self, token_id: str, name: str, key_name: str, secret_hash: str,
                  expires_at: float | None) -> Token:
        row = {"id": token_id, "name": name, "key_name": key_name, "secret_hash": secret_hash,
               "created_at": now(), "last_used_at": None, "expires_at": expires_at}
        with self._tx() as db:
            if db["tokens"].count_where("key_name = ? and name = ?", [key_name, name]):
                raise Conflict(f"key {key_name} already has a token named {name!r}")
            if not db["keys"].count_where("name = ?", [key_name]):
                raise NotFound(f"no key named {key_name!r}")
            db["tokens"].insert(row)
        return Token(**row)

    def token_by_id(self, token_id: str) -> Token | None:
        with self._lock:
            rows = list(self.db["tokens"].rows_where("id = ?", [token_id]))
        return Token(**rows[0]) if rows else None

    def get_token(self, key_name: str, name: str) -> Token:
        with self._lock:
            rows = list(self.db["tokens"].rows_where("key_name = ? and name = ?",
                                                     [key_name, name]))
        if not rows:
            raise NotFound(f"key {key_name} has no token named {name!r}")
        return Token(**rows[0])

    def tokens_named(self, name: str) -> list[Token]:
        """The tokens of every key named `name`."""
        with self._lock:
            return [Token(**r) for r in self.db["tokens"].rows_where(
                "name = ?", [name], order_by="key_name")]

    def list_tokens(self, key_name: str | None = None) -> list[Token]:
        """Every token, or those of one key."""
        where, args = ("key_name = ?", [key_name]) if key_name is not None else (None, None)
        with self._lock:
            return [Token(**r) for r in self.db["tokens"].rows_where(where, args, order_by="name")]

    def delete_token(self, token_id: str) -> None:
        with self._tx() as db:
            db["tokens"].delete_where("id = ?", [token_id])

    def token_used(self, token_id: str, when: float) -> None:
        with self._tx() as db:
            db["tokens"].update(token_id, {"last_used_at": when})

    # dashboard sessions

    def add_dashboard_session(self, id_hash: str, token_id: str, csrf: str, expires_at: float,
                              keep: int) -> None:
        """A new session; the expired ones go, and the token's oldest past `keep`."""
        with self._tx() as db:
            table = db["dashboard_sessions"]
            table.delete_where("expires_at <= ?", [now()])
            table.insert({"id_hash": id_hash, "token_id": token_id, "csrf": csrf,
                          "created_at": now(), "expires_at": expires_at})
            extra = [r["id_hash"] for r in table.rows_where(
                "token_id = ?", [token_id], order_by="created_at desc, rowid desc")][keep:]
            for old in extra:
                table.delete(old)

    def dashboard_session(self, id_hash: str) -> dict | None:
        with self._lock:
            rows = list(self.db["dashboard_sessions"].rows_where("id_hash = ?", [id_hash]))
        return rows[0] if rows else None

    def delete_dashboard_session(self, id_hash: str) -> None:
        with self._tx() as db:
            db["dashboard_sessions"].delete_where("id_hash = ?", [id_hash])

    # grants

    def grant(self, app: str, key_name: str) -> None:
        with self._tx() as db:
            db["grants"].upsert({"app": app, "key_name": key_name}, pk=("app", "key_name"))

    def revoke(self, app: str, key_name: str) -> None:
        with self._tx() as db:
            if not db["grants"].count_where("app = ? AND key_name = ?", [app, key_name]):
                raise NotFound(f"key {key_name!r} has no grant on {app}")
            db["grants"].delete_where("app = ? AND key_name = ?", [app, key_name])

    def granted(self, app: str, key_name: str) -> bool:
        """A preview is granted to whoever its parent is."""
        with self._lock:
            return bool(self.db["grants"].count_where(
                "key_name = ? AND (app = ? OR app IN (SELECT parent FROM previews WHERE name = ?))",
                [key_name, app, app]))

    def grants_of_key(self, key_name: str) -> list[str]:
        with self._lock:
            return [r["app"] for r in self.db["grants"].rows_where("key_name = ?", [key_name], order_by="app")]

    def grants_of(self, app: str) -> list[str]:
        with self._lock:
            return [r["key_name"] for r in self.db["grants"].rows_where("app = ?", [app], order_by="key_name")]
