"""Path routes (issue #13): two separate apps share one host by path prefix,
with and without strip, through the real Traefik on 127.0.0.1."""

import json
import time

import pytest

from tests.e2e.conftest import BASE_IMAGE
from tests.e2e.harness import unique_app
from tests.e2e.helpers import create_and_push, fails, ok

pytestmark = pytest.mark.e2e


def files_at(tag: str, paths: list[str]) -> dict:
    """A busybox httpd app answering `tag:<path>` at each of `paths`."""
    writes = " && ".join(f'mkdir -p /www{p.rsplit("/", 1)[0] or "/"} && echo "{tag}:{p}" > /www{p}'
                         for p in paths)
    return {"Dockerfile": f"FROM {BASE_IMAGE}:latest\nRUN {writes}\n"
                          "CMD exec httpd -f -p $PORT -h /www\n"}


def wait_body(gitd, host, path, expected, timeout=20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = gitd.get(host, path)
        if last == (200, expected) or (expected is None and last[0] == 404):
            return last
        time.sleep(0.2)
    raise AssertionError(f"{host}{path}: wanted {expected!r}, last {last!r}")


def test_two_apps_share_a_host_by_prefix_with_and_without_strip(gitd, tmp_path):
    web, api = unique_app("front"), unique_app("back")
    host = f"shop-{web}.example.test"
    create_and_push(gitd, tmp_path, web, files_at("web", ["/index.html"]))
    create_and_push(gitd, tmp_path, api, files_at("api", ["/api/health", "/health"]))
    ok(gitd, "domains:add", web, host)
    ok(gitd, "domains:add", api, f"{host}/api")
    assert wait_body(gitd, host, "/api/health", "api:/api/health\n")
    assert wait_body(gitd, host, "/", "web:/index.html\n")
    # a prefix is whole segments: /apiary is the web app's (it has none)
    assert gitd.get(host, "/apiary")[0] == 404
    fails(gitd, "domains:add", api, host, match=f"already used by app '{web}'")
    fails(gitd, "domains:add", web, f"{host}/api", match=f"already used by app '{api}'")
    fails(gitd, "domains:add", api, f"{host}/a/../x", match="invalid path prefix", status=2)

    ok(gitd, "domains:add", api, f"{host}/api", "--strip-prefix")
    assert wait_body(gitd, host, "/api/health", "api:/health\n")
    listed = json.loads(ok(gitd, "domains", api, "--json").stdout)
    assert {"host": host, "path": "/api", "strip_prefix": True,
            "url": f"http://{host}:{gitd.http_port}/api"} in listed

    # a newer deploy of the "/" app does not take /api from the longer prefix
    ok(gitd, "ps:restart", web)
    assert gitd.get(host, "/api/health") == (200, "api:/health\n")
    assert gitd.get(host, "/") == (200, "web:/index.html\n")

    ok(gitd, "domains:remove", api, f"{host}/api")
    assert wait_body(gitd, host, "/api/health", None)[0] == 404
    assert gitd.get(host, "/") == (200, "web:/index.html\n")
    for name in (web, api):
        ok(gitd, "apps:destroy", name, "--force")
