"""PostgreSQL: the official image's interface (POSTGRES_PASSWORD, POSTGRES_DB,
PGDATA), dumps in pg_dump's custom format, restores into a fresh database
that is renamed into place only once pg_restore succeeded."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from gitd.core.errors import GitdError
from gitd.services.base import Kind

USER = "postgres"
# gitd's own commands in the container log in as a client would: over TCP
# with the password, so they work whatever the image's pg_hba.conf says of
# the local socket (trust in the official image; peer or a password in others)
LOCAL = ["-h", "127.0.0.1", "-U", USER]


def db_name(svc) -> str:
    return svc.name.replace("-", "_")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Postgres(Kind):
    name: str = "postgres"
    default_image: str = "postgres:{version}-alpine"
    default_version: str = "16"
    port: int = 5432
    data_path: str = "/var/lib/postgresql/data"
    env_prefix: str = "DATABASE"

    def environment(self, svc):
        return {"POSTGRES_PASSWORD": svc.password, "POSTGRES_USER": USER,
                "POSTGRES_DB": db_name(svc), "PGDATA": self.data_path}

    def health_argv(self, svc):
        return ["pg_isready", "-U", USER, "-d", db_name(svc), "-h", "127.0.0.1"]

    def version_argv(self, svc):
        return ["psql", *LOCAL, "-d", "postgres", "-qAt", "-c", "SHOW server_version"]

    def parse_version(self, output):
        match = re.match(r"\s*([0-9]+(?:\.[0-9]+)*)", output)  # `15.18 (Debian 15.18-0+deb12u1)`
        return match.group(1) if match else None

    def url(self, svc, host):
        return f"postgres://{USER}:{svc.password}@{host}:{self.port}/{db_name(svc)}"

    def client_argv(self, svc, host):
        return ["psql", "-h", host, "-U", USER, "-d", db_name(svc)]

    def exec_env(self, svc):
        return {"PGPASSWORD": svc.password}

    def dump_argv(self, svc):
        return ["pg_dump", *LOCAL, "-Fc", "--no-owner", "--no-privileges", db_name(svc)]

    def _psql(self, engine, container, svc, sql: str, db: str = "postgres") -> str:
        status, output = engine.exec(
            container, ["psql", *LOCAL, "-d", db, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
            environment=self.exec_env(svc))
        text = output.decode("utf-8", "replace").strip()
        if status != 0:
            raise GitdError(f"psql failed: {text[-500:]}")
        return text

    def restore(self, engine, container, svc, chunks, emit, restart=None):
        live = db_name(svc)
        token = secrets.token_hex(3)
        fresh, old = f"{live}_restore_{token}", f"{live}_old_{token}"
        self._psql(engine, container, svc, f"CREATE DATABASE {_ident(fresh)}")
        try:
            emit(f"loading the dump into a fresh database ({fresh})")
            status, output = engine.exec(
                container, ["pg_restore", *LOCAL, "-d", fresh, "--no-owner",
                            "--no-privileges", "--exit-on-error"], stdin=chunks,
                environment=self.exec_env(svc))
            if status != 0:
                text = output.decode("utf-8", "replace").strip()
                raise GitdError(f"the dump was refused (pg_restore: {text[-400:]}); "
                                f"{svc.name} is untouched")
            tables = self._psql(engine, container, svc,
                                "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname "
                                "NOT IN ('pg_catalog', 'information_schema')", db=fresh)
            emit(f"restored {tables} table(s); switching {svc.name} to them")
        except BaseException:
            self._drop(engine, container, svc, fresh)
            raise
        self._swap(engine, container, svc, live, fresh, old)
        self._drop(engine, container, svc, old)

    def _swap(self, engine, container, svc, live, fresh, old):
        """Stop new connections to the live database, end the open ones and
        rename in one transaction: either both renames happen or neither."""
        self._psql(engine, container, svc, f"ALTER DATABASE {_ident(live)} ALLOW_CONNECTIONS false")
        try:
            self._psql(engine, container, svc,
                       "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       f"WHERE datname = '{live}' AND pid <> pg_backend_pid()")
            self._psql(engine, container, svc,
                       f"BEGIN; ALTER DATABASE {_ident(live)} RENAME TO {_ident(old)}; "
                       f"ALTER DATABASE {_ident(fresh)} RENAME TO {_ident(live)}; COMMIT;")
        except GitdError:
            self._psql(engine, container, svc,
                       f"ALTER DATABASE {_ident(live)} ALLOW_CONNECTIONS true")
            self._drop(engine, container, svc, fresh)
            raise

    def _drop(self, engine, container, svc, db):
        try:
            self._psql(engine, container, svc, f"DROP DATABASE IF EXISTS {_ident(db)} WITH (FORCE)")
        except GitdError:
            pass
