"""Hypothesis over everything a user types or pushes: every registered
command through the real dispatch path with a real Store (no Docker: the
engine is unreachable, as on a host without it), and the Procfile, app.json
and KEY=VALUE parsers. Whatever the input, the only exceptions are
GitdError subclasses (a clean ` !     message`), never an internal error.

Deterministic: derandomized, no example database. About 2,800 inputs a run, in a few seconds.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitd import commands
from gitd.commands import config as config_cmd
from gitd.commands import ps as ps_cmd
from gitd.core import validate
from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.core.store import Store
from gitd.keys import parse_public_key
from gitd.service import Gitd
from gitd.verbs import ps as ps_verbs
from hooks import checks, procfile
from hooks import engine as engine_mod
from hooks import maintenance as maintenance_mod
from tests.fakes import Bridge

FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=list(HealthCheck))

# the hostile values this issue is about, beside whatever Hypothesis makes
NUMBERS = ["0", "1", "-1", "2", "20", "21", "65535", "65536", "²", "٣", "v²", "v٣", "v0", "v1",
           "V1", "v-1", "v99999999999999999999", "99999999999999999999", "1" * 5000, "inf",
           "-inf", "nan", "NaN", "1e999", "-1e999", "1e3", "0x10", "1_000", " 1", "1.5", ".5",
           "+1", "", "v", "１２"]
PAIRS = ["PORT=²", "PORT=0", "PORT=80", "PORT=99999", "PORT=", "drain=inf", "drain=nan",
         "drain=-1", "drain=1e999", "drain=3", "wait=1e999", "wait=0", "wait=5",
         "attempts=1e999", "attempts=²", "attempts=3", "timeout=-3", "timeout=2",
         "stop_timeout=99999999999999999999", "stop_timeout=5", "path=/", "path=/$(reboot)",
         "path=relative", "web=²", "web=1", "web=99999999999999999999", "worker=2",
         "release=1", "A=1", "A=@-", "GITD_APP=x", "DYNO=x", "=x", "A", "A=\0", "a b=c",
         "KEY=" + "x" * 3000]
APPS = ["hello", "other", "nosuch", "Hello", "-x", "a--b", "a" * 40, "", "hello.git", "../etc",
        "héllo"]
FLAGS = ["--json", "--shell", "--force", "--no-restart", "--admin", "-n", "-f", "--type",
         "--dir", "--attr", "--package", "--", "-h", "--help", "--num=²", "-n²", "--nope"]
WORDS = ["web", "worker", "release", "nix", "dockerfile", "buildpack", "dir", "attr", "admin",
         "dev", "example.com", "hello.example.com", "a..b", "*.example.com", "x" * 300, "dev2"]

token = st.one_of(st.sampled_from(NUMBERS + PAIRS + APPS + FLAGS + WORDS),
                  st.text(max_size=20),
                  st.builds(lambda a, b: f"{a}={b}", st.text(max_size=8), st.text(max_size=8)))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    store = Store(root / "gitd.db")
    store.add_key("admin", "SHA256:admin", "ssh-ed25519 AAAA admin", True)
    store.add_key("dev", "SHA256:dev", "ssh-ed25519 AAAA dev", False)
    gitd = Gitd(Settings(data_dir=root, instance="fuzz1234", lock_wait=0.1), store)
    for app in ("hello", "other"):
        gitd.create_app(app)
    store.grant("hello", "dev")
    # a deployed-looking release, so release/config/rollback paths are reached
    release = store.new_release("hello", status="succeeded", commit="0" * 40, image="gitd/hello:v1",
                                image_id="sha256:" + "0" * 64, procfile={"web": "httpd",
                                                                         "worker": "sleep 1"},
                                config={"A": "1"}, port=5000)
    store.set_live("hello", release.version, store.take_seq("hello"))
    return gitd


@pytest.fixture(autouse=True)
def no_docker(monkeypatch):
    def unreachable(url=""):
        raise GitdError("cannot reach the Docker engine: not in the fuzz suite")
    monkeypatch.setattr(engine_mod, "connect", unreachable)
    # no Traefik either: maintenance:on would wait its 15 s for the routers
    # at every example (test_maintenance tests that wait)
    monkeypatch.setattr(maintenance_mod, "confirm", lambda *args, **kwargs: 0.0)


def dispatch_cleanly(daemon, key_name: str, argv: list[str], stdin: bytes = b"") -> None:
    key = daemon.store.get_key(key_name)
    ctx = commands.Context(daemon, key, Bridge(stdin))
    try:
        status = commands.dispatch(ctx, argv)
    except GitdError as exc:
        assert exc.message, argv
        return
    assert isinstance(status, int), argv


commands._load_modules()
NAMES = sorted(commands.COMMANDS) + ["help", "nosuch:verb"]
PROTECTED = {"keys:remove"}  # fuzzing it would remove the keys the rest use


@settings(FUZZ, max_examples=1500)
@given(name=st.sampled_from([n for n in NAMES if n not in PROTECTED]),
       args=st.builds(lambda first, rest: [first, *rest],
                      st.one_of(st.just("hello"), st.just("hello"), st.just("other"), token),
                      st.lists(st.one_of(st.sampled_from(NUMBERS + PAIRS), token), max_size=4))
       | st.lists(token, max_size=2),
       as_admin=st.sampled_from([True, True, True, False]),
       stdin=st.sampled_from([b"", b"value\n", b"\xff\xfe", b"ssh-ed25519 AAAA x\n"]))
def test_every_command_fails_cleanly_on_any_arguments(daemon, name, args, as_admin, stdin):
    dispatch_cleanly(daemon, "admin" if as_admin else "dev", [name, *args], stdin)


@settings(FUZZ, max_examples=50)
@given(args=st.lists(token, max_size=3))
def test_keys_remove_fails_cleanly(daemon, args):
    dispatch_cleanly(daemon, "dev", ["keys:remove", *args])
    dispatch_cleanly(daemon, "admin", ["keys:remove", "nosuch", *args])


@settings(FUZZ, max_examples=200)
@given(st.one_of(st.text(max_size=300),
                 st.lists(st.one_of(st.sampled_from(["web: httpd", "release: ./migrate", "#x",
                                                     "WEB: a", "web:", ": x", "wé b: x",
                                                     "worker :  sleep 1", "\r", "\x0b", "\u2028"]),
                                    st.text(max_size=30)), max_size=8).map("\n".join)))
def test_procfile_parser(text):
    try:
        parsed = procfile.parse(text)
    except GitdError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())


json_number = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([10**30, -0.0, 1e308, 3.0]))
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), json_number, st.text(max_size=10),
              st.sampled_from(NUMBERS)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(list(checks.KEYS) + ["web", "x"]),
                                            inner, max_size=4)),
    max_leaves=12)
app_json_text = st.one_of(
    st.builds(lambda v: json.dumps({"healthchecks": v}), json_value),
    st.builds(lambda v: json.dumps({"healthchecks": {"web": [v]}}), json_value),
    st.builds(json.dumps, json_value),
    st.text(max_size=50),
    st.sampled_from(['{"healthchecks":{"attempts":1e999}}', '{"healthchecks":{"wait":NaN}}',
                     '{"healthchecks":{"timeout":Infinity}}', "[" * 5000, '{"a":' * 3000]))


@settings(FUZZ, max_examples=400)
@given(app_json_text, st.dictionaries(st.sampled_from(["drain", "stop_timeout", "x"]), json_value,
                                      max_size=2))
def test_app_json_parser_and_resolved_check(text, app_settings):
    try:
        check = checks.resolve({}, text, 60.0)
    except GitdError:
        return
    # what passes must be a check Docker and the deploy can use
    spec = checks.docker_healthcheck(check, 5000)
    assert 0 < spec["timeout"] < 2**63 and 0 < spec["start_period"] < 2**63
    assert 1 <= spec["retries"] <= checks.MAX_ATTEMPTS
    checks.probe_script(check, 5000)


@settings(FUZZ, max_examples=300)
@given(st.lists(st.one_of(st.sampled_from(PAIRS), token), min_size=1, max_size=4))
def test_key_value_parsers(pairs):
    for parse in (lambda: config_cmd.parse_pairs(pairs, lambda: "from stdin\n"),
                  lambda: ps_verbs.check_scale(ps_cmd.scale_pairs(pairs), None),
                  lambda: checks.parse_values(dict(p.partition("=")[::2] for p in pairs)),
                  lambda: [validate.config_pair(p) for p in pairs]):
        try:
            parse()
        except GitdError:
            pass


def _wire(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


@settings(FUZZ, max_examples=300)
@given(kind=st.sampled_from([b"ssh-ed25519", b"ssh-rsa", b"ecdsa-sha2-nistp256", b"ssh-dss",
                             b"sk-ssh-ed25519@openssh.com", b"x"]),
       parts=st.lists(st.binary(max_size=80), max_size=4), cut=st.integers(0, 400),
       junk=st.text(max_size=40))
def test_public_key_parser(kind, parts, cut, junk):
    """keys:add's stdin: any blob after any key type is refused cleanly."""
    import base64
    body = _wire(kind, *parts)[: cut or None]
    line = f"{kind.decode()} {base64.b64encode(body).decode()} {junk}"
    for text in (line, junk):
        try:
            parse_public_key(text)
        except GitdError:
            pass
