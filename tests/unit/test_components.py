"""app.json `services` (issue #13): parsed strictly, hostile input refused."""

import json

import pytest

from gitd.core.errors import UsageError
from hooks import components
from hooks.components import Component, ComponentRoute

FULL = {"services": {
    "frontend": {"build": {"dir": "frontend/"}, "port": 3000, "routes": [{"path": "/"}]},
    "backend": {"build": {"flake_attr": "backendImage"}, "port": 8080,
                "processes": {"web": "serve --port 8080", "worker": "work"},
                "healthchecks": {"path": "/health", "timeout": 2, "attempts": 5},
                "routes": [{"path": "/api/", "strip_prefix": True}, {"path": "/docs"}]},
}}


def parse(data):
    return components.parse(json.dumps(data))


def test_a_full_services_file():
    backend, frontend = parse(FULL)
    assert frontend == Component("frontend", build_dir="frontend", port=3000,
                                 routes=(ComponentRoute("/"),))
    assert backend == Component(
        "backend", flake_attr="backendImage", port=8080,
        processes={"web": "serve --port 8080", "worker": "work"},
        healthchecks={"path": "/health", "timeout": 2.0, "attempts": 5},
        routes=(ComponentRoute("/api", True), ComponentRoute("/docs")))
    assert (backend.env_name, backend.url) == ("BACKEND_URL", "http://backend:8080")
    assert Component("my-api").env_name == "MY_API_URL"


def test_no_services_means_no_components():
    for text in (None, "", "{}", '{"healthchecks": {"path": "/x"}}', "[]", '"services"'):
        assert components.parse(text) == []


def test_defaults():
    (only,) = parse({"services": {"web": {"build": {"dir": "web"}}}})
    assert (only.port, only.processes, only.healthchecks, only.routes) == (5000, {}, {}, ())


def one(body, name="api"):
    return {"services": {name: body}}


GOOD_BUILD = {"dir": "api"}


@pytest.mark.parametrize("data, message", [
    ({"services": {}}, "at least one service"),
    ({"services": []}, "at least one service"),
    ({"services": {f"s{i}": {"build": GOOD_BUILD} for i in range(17)}}, "at most 16"),
    (one({"build": GOOD_BUILD}, name="API"), "service name"),
    (one({"build": GOOD_BUILD}, name="a_b"), "service name"),
    (one({"build": GOOD_BUILD}, name="a--b"), "service name"),
    (one({"build": GOOD_BUILD}, name="-a"), "service name"),
    (one({"build": GOOD_BUILD}, name="a-"), "service name"),
    (one({"build": GOOD_BUILD}, name="../etc"), "service name"),
    (one({"build": GOOD_BUILD}, name="a" * 31), "service name"),
    (one({"build": GOOD_BUILD}, name="1a"), "service name"),
    (one([]), "must be an object"),
    (one({}), "missing build"),
    (one({"build": GOOD_BUILD, "image": "evil"}), "unknown key 'image'"),
    (one({"build": GOOD_BUILD, "labels": {"traefik.enable": "true"}}), "unknown key"),
    (one({"build": {}}), "build must be"),
    (one({"build": {"dir": "a", "flake_attr": "b"}}), "build must be"),
    (one({"build": {"dockerfile": "x"}}), "build must be"),
    (one({"build": {"dir": 3}}), "must be a string"),
    (one({"build": {"dir": "../outside"}}), "invalid build directory"),
    (one({"build": {"dir": "a/../../b"}}), "invalid build directory"),
    (one({"build": {"dir": ".git"}}), "invalid build directory"),
    (one({"build": {"dir": "/"}}), "not the repository's root"),
    (one({"build": {"dir": "."}}), "not the repository's root"),
    (one({"build": {"flake_attr": "a.b"}}), "invalid"),
    (one({"build": {"flake_attr": "x${builtins.exec}"}}), "invalid"),
    (one({"build": GOOD_BUILD, "port": 0}), "port"),
    (one({"build": GOOD_BUILD, "port": 65536}), "port"),
    (one({"build": GOOD_BUILD, "port": True}), "port"),
    (one({"build": GOOD_BUILD, "port": "80a"}), "port"),
    (one({"build": GOOD_BUILD, "port": 1e999}), "port"),
    (one({"build": GOOD_BUILD, "port": -1}), "port"),
    (one({"build": GOOD_BUILD, "processes": []}), "processes must be"),
    (one({"build": GOOD_BUILD, "processes": {"Web!": "x"}}), "invalid process type"),
    (one({"build": GOOD_BUILD, "processes": {"web": ""}}), "one line"),
    (one({"build": GOOD_BUILD, "processes": {"web": "a\nb"}}), "one line"),
    (one({"build": GOOD_BUILD, "processes": {"web": "a\u0000"}}), "one line"),
    (one({"build": GOOD_BUILD, "processes": {"web": ["sh"]}}), "one line"),
    (one({"build": GOOD_BUILD, "processes": {"web": "x" * 5000}}), "one line"),
    (one({"build": GOOD_BUILD, "processes": {f"p{i}": "x" for i in range(17)}}), "processes must be"),
    (one({"build": GOOD_BUILD, "healthchecks": []}), "healthchecks must be"),
    (one({"build": GOOD_BUILD, "healthchecks": {"path": "/a b"}}), "healthchecks"),
    (one({"build": GOOD_BUILD, "healthchecks": {"timeout": "nan"}}), "healthchecks"),
    (one({"build": GOOD_BUILD, "healthchecks": {"cmd": "rm -rf /"}}), "unknown check setting"),
    (one({"build": GOOD_BUILD, "routes": {}}), "routes must be"),
    (one({"build": GOOD_BUILD, "routes": [{"path": "/x"}] * 17}), "routes must be"),
    (one({"build": GOOD_BUILD, "routes": ["/api"]}), "must be"),
    (one({"build": GOOD_BUILD, "routes": [{}]}), "must be"),
    (one({"build": GOOD_BUILD, "routes": [{"path": "/a", "host": "evil.test"}]}), "must be"),
    (one({"build": GOOD_BUILD, "routes": [{"path": 1}]}), "path must be a string"),
    (one({"build": GOOD_BUILD, "routes": [{"path": "api"}]}), "invalid path prefix"),
    (one({"build": GOOD_BUILD, "routes": [{"path": "/a`)||Host(`x"}]}), "invalid path prefix"),
    (one({"build": GOOD_BUILD, "routes": [{"path": "/a/../b"}]}), "invalid path prefix"),
    (one({"build": GOOD_BUILD, "routes": [{"path": "/a", "strip_prefix": "yes"}]}), "true or false"),
    (one({"build": GOOD_BUILD, "routes": [{"path": "/", "strip_prefix": True}]}), "strips nothing"),
    (one({"build": GOOD_BUILD, "routes": [{"path": "/a"}, {"path": "/a/"}]}), "given twice"),
    ({"services": {"a": {"build": {"dir": "a"}, "routes": [{"path": "/x"}]},
                   "b": {"build": {"dir": "b"}, "routes": [{"path": "/x"}]}}}, "both route /x"),
])
def test_hostile_services_are_refused(data, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse(data)


def test_malformed_repeated_deep_and_huge_json_is_refused():
    with pytest.raises(UsageError, match="not valid JSON"):
        components.parse('{"services": ')
    with pytest.raises(UsageError, match="repeats the key 'api'"):
        components.parse('{"services": {"api": {"build": {"dir": "a"}}, "api": {"build": {"dir": "b"}}}}')
    with pytest.raises(UsageError, match="not valid JSON"):
        components.parse("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UsageError, match="larger than"):
        components.parse('{"x": "' + "a" * 300_000 + '"}')


def test_a_service_route_belongs_to_the_app_owning_its_longest_prefix():
    on_host = {"/": "shop", "/api": "other"}
    assert components.route_owner(on_host, "/docs") == "shop"
    assert components.route_owner(on_host, "/api") == "other"
    assert components.route_owner(on_host, "/api/v2") == "other"
    assert components.route_owner(on_host, "/apiary") == "shop"
    assert components.route_owner({"/shop": "shop"}, "/") is None
    assert components.join_paths("/", "/api") == "/api"
    assert components.join_paths("/shop", "/") == "/shop"
    assert components.join_paths("/shop", "/api") == "/shop/api"
