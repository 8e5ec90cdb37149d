"""Images, apps and SQL helpers e2e tests of services share."""

import json
import shlex
import subprocess
from pathlib import Path

from tests.e2e.conftest import BASE_IMAGE
from tests.e2e.harness import make_repo
from tests.e2e.helpers import ok

PG_IMAGE = "gitd-ci/postgres:latest"


REDIS_IMAGE = "gitd-ci/redis:latest"


PG_VERSION = "15"


IMAGES_ENV = {"GITD_SERVICE_IMAGES": "postgres=gitd-test/postgres:{version},"
                                     f"redis={REDIS_IMAGE}"}


def tag_versioned(client) -> None:
    """gitd-ci/postgres runs postgres 15: tagged as gitd-test/postgres:15."""
    client.images.get(PG_IMAGE).tag("gitd-test/postgres", PG_VERSION)


def deploy(gitd, tmp_path: Path, app: str, files: dict) -> Path:
    ok(gitd, "apps:create", app)
    ok(gitd, "checks:set", app, "drain=0.3")
    repo = make_repo(tmp_path / app, files)
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    return repo


def sql(gitd, app: str, statement: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    """psql in a one-off container of `app`, through its DATABASE_URL."""
    script = f'psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qAtc {shlex.quote(statement)}'
    result = gitd.ssh("run", app, "--", "sh", "-c", shlex.quote(script))
    if expect_ok:
        assert result.returncode == 0, (statement, result.stdout, result.stderr)
    return result


def rows(gitd, app: str) -> list[str]:
    return sql(gitd, app, "SELECT note FROM notes ORDER BY id").stdout.split()


def info(gitd, name: str) -> dict:
    return json.loads(ok(gitd, "services:info", name, "--json").stdout)


def ok_bytes(gitd, *args) -> bytes:
    result = subprocess.run(["ssh", "-F", str(gitd.ssh_config(gitd.admin_key)), "-T", "paas",
                             *args], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def storage_app(version: str) -> dict:
    """busybox httpd serving /data (the mounted volume) and its version."""
    return {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\nRUN mkdir -p /data\n"
        f'CMD ["sh", "-c", "echo {version} > /tmp/v; exec httpd -f -p $PORT -h /data"]\n'),
        "app.json": '{"healthchecks": {"path": "/"}}'}


def client_app(version: str, base: str) -> dict:
    """An app with a database client (psql, redis-cli) from the service's
    image, and busybox httpd answering `version` on $PORT."""
    return {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest AS bb\n"
        f"FROM {base}\n"
        "COPY --from=bb /bin/busybox /bin/busybox\n"
        f"RUN mkdir -p /www && echo '{version}' > /www/index.html\n"
        'CMD ["/bin/busybox", "sh", "-c", "exec /bin/busybox httpd -f -p $PORT -h /www"]\n')}
