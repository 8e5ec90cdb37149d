"""A client of a gitd's HTTP API for e2e tests: every answer is checked
against the OpenAPI document gitd serves."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import jsonschema


class Api:
    """A client of one gitd's API that checks every answer against the
    OpenAPI document gitd serves."""

    def __init__(self, server, through_traefik: bool = False):
        """Straight to the API's port, or through gitd's Traefik at api_host."""
        port = server.http_port if through_traefik else server.gitd_api_port
        self.base = f"http://127.0.0.1:{port}"
        self.host = {"Host": "gitd.localhost"} if through_traefik else {}
        self.doc = None
        if through_traefik:
            wait_routed(server)
        self.doc = self.request("GET", "/api/v1/openapi.json")[1]

    def request(self, method: str, path: str, token: str | None = None, body=None,
                raw: bytes | None = None, content_type: str = "application/json",
                headers: dict | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={**self.host, **(headers or {})})
        if data is not None:
            req.add_header("Content-Type", content_type)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, got_headers, text = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            status, got_headers, text = exc.code, exc.headers, exc.read()
        assert got_headers["Content-Type"].startswith("application/json"), text[:300]
        answer = json.loads(text)
        assert status != 500, answer
        if status >= 400:
            assert set(answer) == {"error"} and "Traceback" not in answer["error"], answer
        if self.doc is not None:
            self.conforms(method, path, status, answer)
        return status, answer, got_headers

    def conforms(self, method: str, path: str, status: int, answer) -> None:
        """The answer matches the document's schema for that operation and status."""
        path = path.split("?")[0]
        for template, operations in self.doc["paths"].items():
            pattern = "^" + re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path) and method.lower() in operations:
                responses = operations[method.lower()]["responses"]
                assert str(status) in responses, f"{method} {path}: {status} is not documented"
                schema = responses[str(status)]["content"]["application/json"]["schema"]
                jsonschema.validate(answer, {**schema, "components": self.doc["components"]})
                return
        assert status in (404, 405), f"{method} {path} is not in the document"


def wait_routed(server, timeout: float = 20.0) -> None:
    """Until Traefik has read the API's route file (it watches the directory)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.get("gitd.localhost", "/health") == (200, '{"status": "ok"}'):
            return
        time.sleep(0.2)
    raise AssertionError(f"Traefik does not route gitd.localhost: {server.get('gitd.localhost', '/health')}")


def new_token(server, *args: str, key=None) -> str:
    result = server.ssh("tokens:create", *args, key=key)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]
