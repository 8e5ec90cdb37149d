"""Schema versions of the state database (issue #26, upgrades in place): a
newer data dir is refused untouched, an older one is migrated in one
transaction, and a start killed mid-migration leaves nothing half-applied."""

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gitd.core.errors import GitdError
from gitd.core.store import SCHEMA_VERSION, Store

ROOT = Path(__file__).resolve().parents[2]


def schema_of(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]


def tables_of(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def old_data_dir(path: Path) -> Path:
    """A gitd.db as schema 1 left it: no routes (a `domains` table), no
    nodes, webhooks, deployments or tokens."""
    store = Store(path)
    store.create_app("web")
    store.add_domains("web", ["web.example.com"])
    store.db.conn.close()
    with sqlite3.connect(path) as conn:
        for table in ("routes", "webhooks", "webhook_deliveries", "deployments", "tokens"):
            conn.execute(f"DROP TABLE {table}")
        for table in ("services", "apps"):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN node")
        conn.execute("CREATE TABLE domains (host TEXT PRIMARY KEY, app TEXT)")
        conn.execute("INSERT INTO domains VALUES ('web.example.com', 'web')")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    return path


@pytest.mark.parametrize("written", ["99", str(SCHEMA_VERSION + 1)])
def test_a_data_dir_of_a_newer_gitd_is_refused_untouched(tmp_path, written):
    path = tmp_path / "gitd.db"
    with sqlite3.connect(path) as conn:  # rollback journal: turning on WAL would change the header
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('schema', ?), ('instance', 'abcd1234')", [written])
        conn.execute("CREATE TABLE future (x)")
    before = path.read_bytes()
    with pytest.raises(GitdError) as refused:
        Store(path)
    assert str(refused.value) == (
        f"this data dir was written by a newer gitd (schema {written}); "
        f"this gitd knows up to {SCHEMA_VERSION}: upgrade gitd")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gitd.db"]


@pytest.mark.parametrize("value", ["two", "", "1e3"])
def test_a_schema_that_is_no_number_is_refused_untouched(tmp_path, value):
    path = tmp_path / "gitd.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('schema', ?)", [value])
    before = path.read_bytes()
    with pytest.raises(GitdError, match="records no schema gitd knows"):
        Store(path)
    assert path.read_bytes() == before


def test_a_file_that_is_no_database_is_refused_untouched(tmp_path):
    path = tmp_path / "gitd.db"
    path.write_bytes(b"not sqlite at all\n" * 100)
    with pytest.raises(GitdError, match="the state database is unreadable"):
        Store(path)
    assert path.read_bytes() == b"not sqlite at all\n" * 100


def test_an_older_data_dir_is_migrated_and_its_schema_recorded(tmp_path):
    path = old_data_dir(tmp_path / "gitd.db")
    store = Store(path)
    assert schema_of(path) == str(SCHEMA_VERSION)
    assert store.domains("web") == ["web.example.com"]
    assert {"tokens", "deployments", "webhooks", "idx_tokens_key_name_name"} <= tables_of(path)
    assert "domains" not in tables_of(path)


KILLED_IN_A_STEP = textwrap.dedent("""
    import os, sys
    from gitd.core import store

    def half_a_step(self, db):
        db["tokens"].create({"id": str, "name": str}, pk="id")
        os._exit(9)  # as kill -9 would, after the table and before its indexes

    store.Store._migrate_tokens = half_a_step
    store.Store(sys.argv[1])
""")


@pytest.mark.parametrize("start", ["new", "old"])
def test_a_start_killed_mid_migration_changes_nothing_and_the_next_completes(tmp_path, start):
    path = tmp_path / "gitd.db"
    if start == "old":
        old_data_dir(path)
    tables_before = tables_of(path) if start == "old" else set()
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_A_STEP, str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert killed.returncode == 9, killed.stderr
    assert tables_of(path) == tables_before  # rolled back: not even the routes step stayed
    if start == "old":
        assert schema_of(path) == "1"

    store = Store(path)
    assert schema_of(path) == str(SCHEMA_VERSION)
    assert {"idx_tokens_key_name_name", "idx_tokens_key_name", "routes"} <= tables_of(path)
    assert store.db["tokens"].columns_dict["secret_hash"] is str
    if start == "old":
        assert store.domains("web") == ["web.example.com"]
