"""API tokens (verbs, store, validation), the failed-attempt brake, the body
checker and the assembled OpenAPI document: no server, no Docker."""

import hashlib
import time

import pytest
from aiohttp.test_utils import make_mocked_request

from gitd.api import STATUSES, all_routes, auth, openapi, routing
from gitd.core import validate
from gitd.core.errors import Conflict, GitdError, NotFound, UsageError
from gitd.core.store import Store
from gitd.verbs import Session, tokens
from tests.fakes import StoreGitd


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "gitd.db")
    s.add_key("admin", "SHA256:admin", "ssh-ed25519 AAAA admin", True)
    s.add_key("dev", "SHA256:dev", "ssh-ed25519 AAAA dev", False)
    s.add_key("eve", "SHA256:eve", "ssh-ed25519 AAAA eve", False)
    return s


def session(store, key: str) -> Session:
    return Session(StoreGitd(store), store.get_key(key))


# tokens

def test_a_token_acts_as_its_key_and_only_its_hash_is_stored(store):
    made = tokens.create(session(store, "dev"), "ci")
    assert made["name"] == "ci" and made["key"] == "dev" and made["expires_at"] is None
    assert tokens.authenticate(store, made["token"]).name == "dev"
    secret = made["token"].split("_", 2)[2]  # the secret may hold "_" too
    row = store.get_token("dev", "ci")
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    dump = "\n".join(store.db.iterdump())
    assert secret not in dump and made["token"] not in dump


def test_wrong_secret_unknown_id_and_garbage_are_refused(store):
    token = tokens.create(session(store, "admin"), "t")["token"]
    token_id = token.split("_")[1]
    for presented in (token[:-1] + ("A" if token[-1] != "A" else "B"), f"gitd_{token_id}_",
                      "gitd_000000000000_" + "x" * 43, token + "x", "", "gitd_", "Bearer",
                      token.replace("gitd_", "gitd-"), f"gitd_{token_id.upper()}_x",
                      "gitd_" + "a" * 12 + "_" + "x" * 10_000, "\x00" * 50,
                      f"gitd_{token_id}_\udcff", f"gitd_{token_id}_é", token + "\n"):
        assert tokens.authenticate(store, presented) is None, presented


def test_revoked_expired_and_removed_key_tokens_stop_working(store):
    revoked = tokens.create(session(store, "dev"), "a")["token"]
    expiring = tokens.create(session(store, "dev"), "b", "1h")["token"]
    of_eve = tokens.create(session(store, "eve"), "c")["token"]
    tokens.revoke(session(store, "dev"), "a")
    assert tokens.authenticate(store, revoked) is None
    store.db["tokens"].update(store.get_token("dev", "b").id, {"expires_at": time.time() - 1})
    assert tokens.authenticate(store, expiring) is None
    assert tokens.list_tokens(session(store, "dev"))[0]["expired"] is True
    store.remove_key("eve")
    assert tokens.authenticate(store, of_eve) is None
    assert store.list_tokens("eve") == []


def test_a_deployer_sees_and_revokes_only_its_own_tokens(store):
    tokens.create(session(store, "dev"), "mine")
    tokens.create(session(store, "eve"), "theirs")
    assert [t["name"] for t in tokens.list_tokens(session(store, "dev"))] == ["mine"]
    assert [t["name"] for t in tokens.list_tokens(session(store, "admin"))] == ["mine", "theirs"]
    with pytest.raises(NotFound):
        tokens.revoke(session(store, "dev"), "theirs")
    with pytest.raises(NotFound):
        tokens.revoke(session(store, "dev"), "theirs", key="eve")
    assert store.get_token("eve", "theirs")
    tokens.revoke(session(store, "admin"), "theirs")
    with pytest.raises(NotFound):
        store.get_token("eve", "theirs")


def test_listing_never_shows_a_secret(store):
    made = tokens.create(session(store, "dev"), "ci", "30d")
    listed = tokens.list_tokens(session(store, "dev"))
    assert set(listed[0]) == {"name", "key", "created_at", "last_used_at", "expires_at", "expired"}
    assert made["token"] not in repr(listed)


def test_token_names_are_unique_per_key_and_validated(store):
    tokens.create(session(store, "dev"), "ci")
    with pytest.raises(Conflict):
        tokens.create(session(store, "dev"), "ci")
    for bad in ("", "-x", "a b", "x" * 65, "../x", "a\nb", "é"):
        with pytest.raises(UsageError):
            tokens.create(session(store, "dev"), bad)
    assert [t.name for t in store.list_tokens()] == ["ci"]
    default = tokens.create(session(store, "dev"))["name"]
    assert default.startswith("dev-")


def test_another_keys_token_name_is_free_and_not_told(store):
    """A name was unique across keys: a deployer's tokens:create of a name
    another key had answered 409, telling it that key's token names."""
    eve = tokens.create(session(store, "eve"), "ci")
    dev = tokens.create(session(store, "dev"), "ci")
    assert {t.key_name for t in store.tokens_named("ci")} == {"dev", "eve"}
    assert tokens.authenticate(store, dev["token"]).name == "dev"
    tokens.revoke(session(store, "dev"), "ci")  # its own, not eve's
    assert tokens.authenticate(store, dev["token"]) is None
    assert tokens.authenticate(store, eve["token"]).name == "eve"


def test_an_admin_names_the_key_when_several_keys_have_the_token_name(store):
    tokens.create(session(store, "eve"), "ci")
    tokens.create(session(store, "dev"), "ci")
    with pytest.raises(UsageError, match="--key"):
        tokens.revoke(session(store, "admin"), "ci")
    assert tokens.revoke(session(store, "admin"), "ci", key="eve") == {"name": "ci", "key": "eve"}
    assert [t.key_name for t in store.tokens_named("ci")] == ["dev"]
    tokens.create(session(store, "admin"), "ci")
    assert tokens.revoke(session(store, "admin"), "ci")["key"] == "admin"  # its own first
    for bad in ("../x", "-k", ""):
        with pytest.raises(UsageError):
            tokens.revoke(session(store, "admin"), "ci", key=bad)
    assert [t.key_name for t in store.tokens_named("ci")] == ["dev"]


def test_an_old_store_gets_token_names_unique_per_key(tmp_path):
    old = Store(tmp_path / "gitd.db")
    old.db["tokens"].drop()
    old.db["tokens"].create({"id": str, "name": str, "key_name": str, "secret_hash": str,
                             "created_at": float, "last_used_at": float, "expires_at": float},
                            pk="id")
    old.db["tokens"].create_index(["name"], unique=True)
    old.add_key("dev", "SHA256:dev", "ssh-ed25519 AAAA dev", False)
    old.add_key("eve", "SHA256:eve", "ssh-ed25519 AAAA eve", False)
    old.add_token("a" * 12, "ci", "dev", "h", None)
    again = Store(tmp_path / "gitd.db")
    again.add_token("b" * 12, "ci", "eve", "h", None)
    with pytest.raises(Conflict):
        again.add_token("c" * 12, "ci", "eve", "h", None)
    assert [t.key_name for t in again.tokens_named("ci")] == ["dev", "eve"]
    Store(tmp_path / "gitd.db")  # and again: nothing to do


@pytest.mark.parametrize("text,seconds", [("1h", 3600), ("12h", 43200), ("30d", 30 * 86400),
                                          ("3650d", 3650 * 86400)])
def test_expiry(text, seconds):
    assert validate.expiry(text) == seconds


@pytest.mark.parametrize("text", ["0d", "0h", "-1d", "99999999d", "3651d", "garbage", "30", "d",
                                  "1.5d", "30D", " 30d", "30d ", "1e3d", "٣d", "inf", ""])
def test_hostile_expiry_is_refused(store, text):
    with pytest.raises(UsageError):
        validate.expiry(text)
    with pytest.raises(UsageError):
        tokens.create(session(store, "dev"), "x", text)
    assert store.list_tokens() == []


def test_last_used_is_recorded_at_most_once_a_minute(store):
    token = tokens.create(session(store, "dev"), "ci")["token"]
    tokens.authenticate(store, token)
    first = store.get_token("dev", "ci").last_used_at
    assert first is not None
    tokens.authenticate(store, token)
    assert store.get_token("dev", "ci").last_used_at == first


# the brake on failed attempts

def test_failed_attempts_are_braked_per_address_and_forgotten():
    attempts = auth.FailedAttempts(allowed=3, window=0.3)
    for _ in range(3):
        assert attempts.retry_after("10.0.0.1") == 0
        attempts.failed("10.0.0.1")
    assert attempts.retry_after("10.0.0.1") >= 1
    assert attempts.retry_after("10.0.0.2") == 0
    time.sleep(0.35)
    assert attempts.retry_after("10.0.0.1") == 0


def test_a_spray_of_addresses_cannot_grow_the_table(monkeypatch):
    monkeypatch.setattr(auth, "MAX_TRACKED", 50)
    attempts = auth.FailedAttempts(allowed=3, window=60)
    for i in range(500):
        attempts.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(attempts.by_client) <= 50


# bodies

BODY = {"type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {"name": routing.APP_NAME, "n": {"type": "integer", "minimum": 1, "maximum": 3},
                       "flag": {"type": "boolean"}, "repo_url": routing.NOT_YET,
                       "kind": {"type": "string", "enum": ["a", "b"]}}}


@pytest.mark.parametrize("body", [None, [], "x", 1, {}, {"name": 1}, {"name": "a-"},
                                  {"name": "a--b"}, {"name": "A"}, {"name": "a" * 31},
                                  {"name": "ok", "extra": 1}, {"name": "ok", "n": True},
                                  {"name": "ok", "n": 4}, {"name": "ok", "flag": 1},
                                  {"name": "ok", "n": 1.5}, {"name": "ok", "kind": "c"}])
def test_bodies_not_matching_the_schema_are_usage_errors(body):
    with pytest.raises(UsageError):
        routing.check(body, BODY, "body")


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"name": "ok", "n": NaN}', b'{"n": Infinity}',
                                 b"\xff", b'{"name": "ok"} x', b"{"])
def test_hostile_json_is_a_usage_error(raw):
    with pytest.raises(UsageError, match="not valid JSON"):
        routing.parse_json(raw, BODY)


def test_a_field_not_supported_yet_says_so():
    with pytest.raises(UsageError, match="body.repo_url: not supported yet"):
        routing.check({"name": "ok", "repo_url": "https://example.com/x.git"}, BODY, "body")


@pytest.mark.parametrize("name", ["a", "a-b", "a1-b2-c3", "a" * 30])
def test_the_app_name_pattern_is_validate_app_name(name):
    routing.check({"name": name}, BODY, "body")
    validate.app_name(name)


def test_every_gitd_error_has_a_status():
    from gitd.api import status_of
    assert status_of(GitdError("x")) == 400
    assert status_of(NotFound("x")) == 404
    assert status_of(Conflict("x")) == 409
    assert len({cls for cls, _ in STATUSES}) == len(STATUSES)


# the OpenAPI document

def test_the_document_names_every_route_with_an_operation_id_once():
    routes = all_routes()
    doc = openapi.document(routes)
    assert doc["openapi"].startswith("3.1")
    ids = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)) == len(routes)
    for route in routes:
        operation = doc["paths"][route.path][route.method.lower()]
        if route.auth:
            assert {"401", "403", "404", "429"} <= set(operation["responses"])
            assert operation["security"] == [{"bearer": []}]
        for name in [p[1:-1] for p in route.path.split("/") if p.startswith("{")]:
            assert name in [p["name"] for p in operation.get("parameters", [])]


def test_the_document_is_valid_openapi():
    from openapi_spec_validator import validate as validate_spec

    validate_spec(openapi.document(all_routes()))


# api_host: the API through a managed Traefik, a host no app takes

def test_the_api_host_is_no_apps():
    from gitd.core.config import Settings

    settings = Settings(domain="apps.example.com")
    assert settings.api_hostname == "gitd.apps.example.com"
    with pytest.raises(UsageError, match="gitd's own"):
        validate.own_host("gitd.apps.example.com", "gitd", settings.domain, settings.api_hostname)
    with pytest.raises(UsageError, match="gitd's own"):
        validate.own_host("gitd.apps.example.com", "web", settings.domain, settings.api_hostname)
    custom = Settings(domain="apps.example.com", api_host="API.example.com.")
    assert custom.api_hostname == "api.example.com"
    validate.own_host("gitd.apps.example.com", "gitd", custom.domain, custom.api_hostname)


def test_creating_the_app_named_like_the_api_host_is_refused(store, tmp_path):
    from gitd.core.config import Settings
    from gitd.verbs import apps

    class Gitd(StoreGitd):
        settings = Settings(data_dir=tmp_path, domain="example.com")

        def create_app(self, name):
            raise AssertionError("refused before anything is made")

    with pytest.raises(UsageError, match="gitd's own"):
        apps.create(Session(Gitd(store), store.get_key("admin")), "gitd")


def test_the_api_route_is_plain_http_or_https_only():
    from gitd.api import exposure
    from gitd.core.config import Settings

    plain = exposure.route_config(Settings(domain="example.com"), 8123, "s3")["http"]
    assert plain["routers"] == {"gitd-api": {"rule": "Host(`gitd.example.com`)",
                                             "entryPoints": ["web"], "service": "gitd-api",
                                             "middlewares": ["gitd-api-proxied"]}}
    assert plain["middlewares"]["gitd-api-proxied"] == {
        "headers": {"customRequestHeaders": {"X-Gitd-Proxy": "s3"}}}
    assert plain["services"]["gitd-api"]["loadBalancer"]["servers"] == [{"url": "http://127.0.0.1:8123"}]
    tls = exposure.route_config(Settings(domain="example.com", https_port=443,
                                         acme_email="a@example.com"), 8123, "s3")["http"]
    assert tls["routers"]["gitd-api"]["middlewares"] == ["gitd-api-https"]
    assert tls["routers"]["gitd-api-tls"]["tls"] == {"certResolver": "gitd",
                                                     "domains": [{"main": "gitd.example.com"}]}
    assert tls["middlewares"]["gitd-api-https"]["redirectScheme"]["scheme"] == "https"
    assert tls["routers"]["gitd-api-tls"]["middlewares"] == ["gitd-api-proxied"]


def test_x_forwarded_for_counts_only_with_traefiks_secret():
    """A local process sending X-Forwarded-For straight to the API's port
    must not pick the address the brake counts."""
    from aiohttp.test_utils import make_mocked_request

    from gitd.api import auth

    app = {"proxy_secret": "s3cret"}

    def address(headers, peer="127.0.0.1"):
        request = make_mocked_request("GET", "/api/v1/apps", headers=headers, app=app)
        request._transport_peername = (peer, 5555)
        return auth.client_address(request)

    assert address({"X-Forwarded-For": "203.0.113.9", "X-Gitd-Proxy": "s3cret"}) == "203.0.113.9"
    assert address({"X-Forwarded-For": "203.0.113.9"}) == "127.0.0.1"
    assert address({"X-Forwarded-For": "203.0.113.9", "X-Gitd-Proxy": "guess"}) == "127.0.0.1"
    assert address({"X-Forwarded-For": "203.0.113.9", "X-Gitd-Proxy": "s3cret"},
                   peer="198.51.100.7") == "198.51.100.7"
    app["proxy_secret"] = None  # no Traefik route: nothing is trusted
    assert address({"X-Forwarded-For": "203.0.113.9", "X-Gitd-Proxy": ""}) == "127.0.0.1"


def test_a_busy_deploy_lock_is_a_conflict():
    from gitd.api import status_of
    from hooks.locks import AppLocks

    locks = AppLocks()
    with locks.hold("hello", 1.0):
        with pytest.raises(Conflict) as caught:
            with locks.hold("hello", 0.01):
                pass
    assert status_of(caught.value) == 409


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_api_port_must_be_a_port(tmp_path, port):
    from gitd.core.config import load_settings

    with pytest.raises(GitdError, match="api_port"):
        load_settings(tmp_path, environ={"GITD_API_PORT": port})


def test_api_port_0_turns_the_api_off_and_8088_is_the_default(tmp_path):
    from gitd.core.config import load_settings

    assert load_settings(tmp_path, environ={}).api_port == 8088
    assert load_settings(tmp_path, flags={"api_port": 0}, environ={}).api_port == 0


# the schema subset the new routes use

def test_type_lists_property_names_and_sizes_are_checked():
    from gitd.api import config as config_routes, domains as domain_routes, ps as ps_routes
    routing.check({"A": "1", "B": None}, config_routes.PATCH_BODY, "body")
    routing.check({"PORT": "5000"}, config_routes.PATCH_BODY, "body")
    for bad in ({}, {"1A": "1"}, {"A-B": "1"}, {"A": 1}, {"PORT": "70000"},
                {f"K{i}": "v" for i in range(101)}):
        with pytest.raises(UsageError):
            routing.check(bad, config_routes.PATCH_BODY, "body")
    routing.check({"web": 2, "api.worker": 0, "worker": 3.0}, ps_routes.SCALE_BODY, "body")
    for bad in ({"web": 21}, {"web": -1}, {"release": 1}, {"Web": 1}, {"web": "2"}, {},
                {"web": 1.5}, {"web": float("inf")}):
        with pytest.raises(UsageError):
            routing.check(bad, ps_routes.SCALE_BODY, "body")
    routing.check({"domains": ["a.example.com", "b.example.com/api"]}, domain_routes.ADD_BODY,
                  "body")
    for bad in ({"domains": []}, {"domains": ["x" * 400]}, {"domains": ["a.b.c"] * 51},
                {"domains": ["a.example.com`"]}, {"domains": "a.example.com"}):
        with pytest.raises(UsageError):
            routing.check(bad, domain_routes.ADD_BODY, "body")


@pytest.mark.parametrize("raw,value", [(None, None), ("5", 5), ("0", 0)])
def test_query_integers(raw, value):
    from gitd.api import releases as release_routes
    request = make_mocked_request("GET", "/x" if raw is None else f"/x?count={raw}")
    assert routing.query(request, release_routes.COUNT_PARAM) == value


@pytest.mark.parametrize("raw", ["-1", "x", "1e3", "10001", "9" * 40, ""])
def test_hostile_query_integers_are_usage_errors(raw):
    from gitd.api import releases as release_routes
    with pytest.raises(UsageError):
        routing.query(make_mocked_request("GET", f"/x?count={raw}"), release_routes.COUNT_PARAM)


def test_the_brake_allows_what_api_auth_failures_says(tmp_path):
    from gitd.core.config import load_settings
    settings = load_settings(tmp_path, environ={"GITD_API_AUTH_FAILURES": "200"})
    assert settings.api_auth_failures == 200
    from gitd.api import build_app

    class Gitd:
        pass
    Gitd.settings = settings
    assert build_app(Gitd())["failed_attempts"].allowed == 200
    assert load_settings(tmp_path, environ={}).api_auth_failures == 10
    with pytest.raises(GitdError, match="api_auth_failures"):
        load_settings(tmp_path, environ={"GITD_API_AUTH_FAILURES": "0"})


def test_a_name_that_is_someone_elses_is_a_conflict_over_http_and_bad_usage_over_ssh():
    from gitd.api import status_of
    from gitd.core.errors import Taken
    with pytest.raises(Taken) as refused:
        validate.own_host("other.example.com", "hello", "example.com")
    assert status_of(refused.value) == 409 and refused.value.exit_status == 2
    with pytest.raises(Taken):
        validate.own_host("gitd.example.com", "gitd", "example.com", "gitd.example.com")


@pytest.mark.parametrize("domain", ["0." + "a" * 70, "a.b", "x.ab/" + "a" * 120, "x.ab/..",
                                    "x.ab//y", "a" * 250 + ".example.com", "1.2.3.4"])
def test_the_domain_pattern_refuses_what_validate_refuses(domain):
    from gitd.api import domains as domain_routes
    with pytest.raises(UsageError):
        routing.check({"domains": [domain]}, domain_routes.ADD_BODY, "body")


def test_a_field_that_goes_with_another_is_refused_alone():
    schema = {"type": "object", "dependentRequired": {"branch": ["repo_url"]},
              "properties": {"branch": {"type": "string"}, "repo_url": {"type": "string"}}}
    routing.check({"branch": "main", "repo_url": "/srv/x"}, schema, "body")
    routing.check({}, schema, "body")
    with pytest.raises(UsageError, match="'branch' goes with 'repo_url'"):
        routing.check({"branch": "main"}, schema, "body")


def test_the_live_log_routes_document_their_event_stream():
    doc = openapi.document(all_routes())
    live = {(path, method) for path, ops in doc["paths"].items() for method, op in ops.items()
            if "text/event-stream" in op["responses"].get("200", {}).get("content", {})}
    assert live == {("/api/v1/deployments/{id}/log", "get"), ("/api/v1/apps/{name}/logs", "get")}
    for path, method in live:
        content = doc["paths"][path][method]["responses"]["200"]["content"]
        assert content["text/event-stream"]["schema"]["type"] == "string"
        assert "application/json" in content
