"""What one more app costs a command (issue #21): apps:list does the same
work for 100 apps as for 3."""

import pytest

from gitd import commands
from gitd.config import Settings
from gitd.store import Store
from tests.unit.test_commands import Bridge, FakeGitd


@pytest.fixture
def crowd(tmp_path):
    store = Store(tmp_path / "gitd.db")
    store.add_key("admin", "SHA256:admin", "ssh-ed25519 AAAA admin", True)
    store.add_key("dev", "SHA256:dev", "ssh-ed25519 AAAA dev", False)
    return FakeGitd(store, Settings(data_dir=tmp_path, instance="t1234567"))


def _apps_list(fake, key):
    """(output, writes to the session, SQL statements run)"""
    statements = []
    fake.store.db.conn.set_trace_callback(statements.append)
    try:
        ctx = commands.Context(fake, fake.store.get_key(key), Bridge())
        statements.clear()
        assert commands.dispatch(ctx, ["apps:list"]) == 0
    finally:
        fake.store.db.conn.set_trace_callback(None)
    return "".join(ctx.bridge.stdout), len(ctx.bridge.stdout), len(statements)


@pytest.mark.parametrize("key", ["admin", "dev"])
def test_apps_list_costs_the_same_for_100_apps_as_for_3(crowd, key):
    costs = []
    for count in (3, 100):
        for n in range(len(costs) and 3, count):
            crowd.store.create_app(f"app-{n:03}")
            if n % 2:
                crowd.store.grant(f"app-{n:03}", "dev")
        out, writes, queries = _apps_list(crowd, key)
        shown = [line.split()[0] for line in out.splitlines()]
        expected = [f"app-{n:03}" for n in range(count) if key == "admin" or n % 2]
        assert shown == expected
        assert out.endswith("(not deployed)\n")
        costs.append((writes, queries))
    assert costs[0] == costs[1] and costs[0][0] == 1, costs
