"""#29 item 8: a service reports the version its server says it is, and an
upgrade its image cannot perform is refused with nothing changed (the real
gitd-ci/postgres image, postgres 15, named without {version})."""

import json
from pathlib import Path

import pytest

from tests.e2e.harness import unique_app
from tests.e2e.helpers import fails, ok
from tests.e2e.services_helpers import PG_IMAGE

pytestmark = pytest.mark.e2e


def test_postgres_without_version_in_its_image_name(own_gitd, docker_client):
    own_gitd.start(extra_env={"GITD_SERVICE_IMAGES": f"postgres={PG_IMAGE}"})
    db = unique_app("vdb")
    created = ok(own_gitd, "services:create", "postgres", db)  # asks for the default, 16
    assert "it runs postgres 15." in created.stdout
    assert f"asked for postgres 16, but the image {PG_IMAGE} runs 15." in created.stderr
    data = json.loads(ok(own_gitd, "services:info", db, "--json").stdout)
    assert data["server_version"].startswith("15.") and data["version"] == "16"
    text = ok(own_gitd, "services:info", db).stdout
    assert text.startswith(f"=== {db} (postgres 15.")
    assert "(asked for 16: the image runs 15." in text

    container = docker_client.containers.get(f"gitd-{own_gitd.instance}-svc-{db}")
    refused = fails(own_gitd, "services:upgrade", db, "--version", "17",
                    match=f"{db} cannot move to postgres 17: its image ({PG_IMAGE}")
    assert "nothing changed" in refused.stderr and "runs 17" not in refused.stdout
    after = json.loads(ok(own_gitd, "services:info", db, "--json").stdout)
    assert after == {**data, "size_bytes": after["size_bytes"]}
    assert docker_client.containers.get(container.id).status == "running"
    assert not list(Path(own_gitd.data_dir, "backups").glob(f"{db}/*"))  # not even a dump
    selected = ok(own_gitd, "services:connect", db, input="SELECT version();\n").stdout
    assert "PostgreSQL 15." in selected
    ok(own_gitd, "services:destroy", db, "--force")
