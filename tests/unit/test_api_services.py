"""Services and certificates over HTTP (issue #23): the same verbs and
admin rules as services:* and certs:* over SSH, each answer checked against
the OpenAPI document. In-process (aiohttp's test server) over a real store
and the recording services fake; nothing reaches Docker."""

import asyncio
import re

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gitd.api import build_app
from gitd.verbs import Session, tokens
from tests.fakes import FakeServices


@pytest.fixture
def gitd(fake):
    fake.services = FakeServices(fake.store)
    fake.store.create_service(name="db", kind="postgres", version="16", image="postgres:16",
                              password="p", volume="v-db")
    fake.store.grant("hello", "dev")
    return fake


def token(gitd, key: str) -> str:
    return tokens.create(Session(gitd, gitd.store.get_key(key)))["token"]


def requests(gitd, *asked):
    """(method, path, token[, body]) each, in order: (status, JSON) each,
    every answer matching the document's schema for its status."""
    async def run():
        app = build_app(gitd)
        async with TestClient(TestServer(app)) as client:
            answers = []
            for method, path, presented, *body in asked:
                response = await client.request(
                    method, path, json=body[0] if body else None,
                    headers={"Authorization": f"Bearer {presented}"})
                answer = await response.json()
                conforms(app["openapi"], method, path, response.status, answer)
                answers.append((response.status, answer))
            return answers
    return asyncio.run(run())


def conforms(doc, method, path, status, answer):
    for template, operations in doc["paths"].items():
        pattern = "^" + re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            response = operations[method.lower()]["responses"][str(status)]
            schema = response["content"]["application/json"]["schema"]
            jsonschema.validate(answer, {**schema, "components": doc["components"]})
            return
    raise AssertionError(f"{method} {path} is not in the document")


def test_an_admin_creates_links_unlinks_and_destroys_a_service(gitd):
    admin = token(gitd, "admin")
    answers = requests(
        gitd,
        ("POST", "/api/v1/services", admin, {"kind": "redis", "name": "cache", "version": "7"}),
        ("POST", "/api/v1/services/db/links/hello", admin),
        ("POST", "/api/v1/services/db/links/hello", admin),
        ("DELETE", "/api/v1/services/db/links/hello", admin),
        ("DELETE", "/api/v1/services/db/links/hello", admin),
        ("DELETE", "/api/v1/services/cache", admin),
    )
    assert [status for status, _ in answers] == [201, 201, 409, 200, 404, 200]
    assert answers[0][1]["name"] == "cache" and answers[0][1]["env_var"] == "REDIS_URL"
    assert answers[1][1]["env_var"] == "DATABASE_URL"
    assert answers[1][1]["config"]["outcome"] == "stored"
    assert "already linked" in answers[2][1]["error"]
    assert gitd.services.calls == [("create", "redis", "cache", "7"), ("destroy", "cache")]
    assert gitd.store.get_config("hello") == {} and gitd.store.links_of_app("hello") == {}


def test_a_deployer_is_refused_every_service_change_and_nothing_changes(gitd):
    dev = token(gitd, "dev")  # hello is granted to it: still no services
    answers = requests(
        gitd,
        ("POST", "/api/v1/services", dev, {"kind": "postgres", "name": "mine"}),
        ("POST", "/api/v1/services/db/links/hello", dev),
        ("DELETE", "/api/v1/services/db/links/hello", dev),
        ("DELETE", "/api/v1/services/db", dev),
        ("POST", "/api/v1/apps/hello/certificates", dev, {"bundle": "x"}),
        ("DELETE", "/api/v1/apps/hello/certificates", dev),
    )
    assert [status for status, _ in answers] == [403] * 6
    assert gitd.services.calls == [] and gitd.store.links_of_app("hello") == {}
    assert [s.name for s in gitd.store.list_services()] == ["db"]


@pytest.mark.parametrize("method,path,body,status", [
    ("POST", "/api/v1/services", {"kind": "mysql", "name": "x"}, 400),
    ("POST", "/api/v1/services", {"kind": "postgres", "name": "db"}, 409),
    ("POST", "/api/v1/services", {"kind": "postgres", "name": "../x"}, 400),
    ("POST", "/api/v1/services", {"kind": "postgres", "name": "x", "version": "16; rm"}, 400),
    ("POST", "/api/v1/services", {"kind": "postgres", "name": "x", "node": "n1"}, 409),
    ("POST", "/api/v1/services", {"kind": "postgres", "name": "x", "extra": 1}, 400),
    ("POST", "/api/v1/services", {"name": "x"}, 400),
    ("POST", "/api/v1/services/nosuch/links/hello", None, 404),
    ("POST", "/api/v1/services/db/links/nosuch", None, 404),
    ("POST", "/api/v1/services/DB/links/hello", None, 400),
    ("DELETE", "/api/v1/services/nosuch", None, 404),
    ("POST", "/api/v1/apps/hello/certificates", {"bundle": "not pem"}, 409),  # HTTPS off
    ("POST", "/api/v1/apps/hello/certificates", {"bundle": 5}, 400),
    ("DELETE", "/api/v1/apps/hello/certificates", None, 404),  # none installed
])
def test_bad_service_and_certificate_requests_are_4xx_and_change_nothing(gitd, method, path,
                                                                           body, status):
    admin = token(gitd, "admin")
    asked = (method, path, admin) + ((body,) if body is not None else ())
    assert requests(gitd, asked)[0][0] == status
    assert gitd.services.calls == [] and gitd.store.links_of_app("hello") == {}
    assert [s.name for s in gitd.store.list_services()] == ["db"]
