"""Stand-ins and helpers that more than one test module uses: the one place
for them. Test modules import from here, never from each other; a helper
only one module needs stays in that module.

Nothing here reaches Docker, Nix or the network: the fakes record what the
code asked for and answer as the engine, the daemon or the channel would.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib
import io
import json
import pkgutil
import subprocess
from pathlib import Path, PurePath

import jinja2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gitd import commands
from gitd.core.config import Settings
from gitd.core.errors import DeployError
from gitd.core.store import Store
from gitd.verbs.config import replace_config
from hooks.locks import AppLocks

REPO = Path(__file__).resolve().parents[1]

# --- an admin command without services: the channel, the daemon, a store --------------


class Bridge:
    """The SSH channel: stdout and stderr kept apart, stdin given, never closed."""

    def __init__(self, stdin: bytes = b""):
        self.stdout, self.stderr, self._in = [], [], io.BytesIO(stdin)

    def out(self, text):
        self.stdout.append(text)

    def err(self, text):
        self.stderr.append(text)

    def read_all(self, limit=1024 * 1024):
        return self._in.read(limit + 1)

    def recv(self, size, timeout=None):
        return self._in.read(size)

    def closed(self):
        return False

    def terminal_size(self):
        return 0, 0


class Pipeline:
    """Records what a command asked for; fails when told to."""

    def __init__(self):
        self.calls, self.fail = [], False

    def release(self, app, base, config, kind, description, by, sink):
        self.calls.append(("release", app, base.version, dict(config), kind, description))
        if self.fail:
            raise DeployError("the new container did not become healthy")

    def redeploy(self, app, sink, reason):
        self.calls.append(("redeploy", app, reason))
        if self.fail:
            raise DeployError("the new container did not become healthy")


class StoreGitd:
    """The daemon as the API and its verbs see it when they need no more
    than the store and the settings (the API reads api_auth_failures)."""

    def __init__(self, store, settings=None):
        self.store = store
        self.settings = settings or Settings()


class FakeGitd:
    """The daemon as commands see it: a store, settings, app locks and a
    recording pipeline; no engine."""

    def __init__(self, store, settings):
        self.store, self.settings = store, settings
        self.locks, self.pipeline = AppLocks(), Pipeline()

    def app_lock(self, app, notify=None):
        """As gitd.service.Gitd's: a wait is told to `notify`."""
        def waiting():
            if notify:
                notify(f"-----> Waiting for the deploy of {app} in progress to finish")
        return self.locks.hold(app, 1.0, on_wait=waiting)

    @property
    def scheduler_class(self):
        from gitd import scheduling
        return scheduling.scheduler_class(self.settings)

    @property
    def engine(self):
        raise AssertionError("unit tests do not reach Docker")


class FakeServices:
    """gitd.services.lifecycle as the verbs see it: records what it was asked."""

    def __init__(self, db):
        self.store, self.calls = db, []

    def create(self, kind, name, version, progress, node=None):
        self.calls.append(("create", kind, name, version))
        progress("-----> Starting")
        return self.store.create_service(name=name, kind=kind, version=version or "16",
                                         image=f"postgres:{version or '16'}", password="p",
                                         volume=f"v-{name}")

    def running(self, svc):
        return "container"

    def server_version(self, svc, container):
        return "16.4"

    def backup_stream(self, svc, write):
        self.calls.append(("backup", svc.name))
        write(b"PGDMP")

    def restore(self, svc, chunks, progress):
        self.calls.append(("restore", svc.name, b"".join(chunks)))

    def recreate(self, svc, progress):
        self.calls.append(("recreate", svc.name, svc.exposed_port))

    def destroy(self, svc, progress):
        self.calls.append(("destroy", svc.name))

    def url(self, svc):
        return f"postgres://u:p@{svc.name}:5432/{svc.name}"


@pytest.fixture
def store(tmp_path):
    """An admin key, a deployer key (dev) and the app hello at hello.example.com."""
    s = Store(tmp_path / "gitd.db")
    s.add_key("admin", "SHA256:admin", "ssh-ed25519 AAAA admin", True)
    s.add_key("dev", "SHA256:dev", "ssh-ed25519 AAAA dev", False)
    s.create_app("hello")
    s.add_domains("hello", ["hello.example.com"])
    return s


@pytest.fixture
def fake(store, tmp_path):
    return FakeGitd(store, Settings(data_dir=tmp_path, instance="t1234567", http_port=8080))


def call(fake, *argv, key="admin", stdin=b""):
    """Runs one command as `key` through the real dispatch: (status, stdout, stderr)."""
    ctx = commands.Context(fake, fake.store.get_key(key), Bridge(stdin))
    status = commands.dispatch(ctx, list(argv))
    return status, "".join(ctx.bridge.stdout), "".join(ctx.bridge.stderr)


# --- containers and the engine ---------------------------------------------------------


class Progress:
    """A deploy's progress (hooks' `progress`), its lines and warnings kept."""

    def __init__(self):
        self.lines, self.warnings = [], []

    def line(self, text):
        self.lines.append(text)

    def warn(self, text):
        self.warnings.append(text)


class Container:
    """A container as the docker SDK returns it: the fields gitd reads."""

    def __init__(self, name, labels, status="running", attrs=None):
        self.name, self.labels, self.status, self.attrs = name, labels, status, attrs or {}
        self.id = name

    def start(self):
        self.status = "running"


def app_container(app, seq, release, process="web", health="healthy", status="running"):
    """One of app's service containers (instance t), from deploy `seq` of `release`."""
    labels = {"gitd.app": app, "gitd.seq": str(seq), "gitd.release": str(release),
              "gitd.process": process, "gitd.role": "service", "gitd.instance": "t"}
    return Container(f"gitd-t.{app}.{process}.1.s{seq}", labels, status,
                     {"State": {"Status": status, "Health": {"Status": health}}})


def listed_ports(attrs: dict) -> list[dict]:
    """A container's published ports as the engine's listing shows them."""
    return [{"IP": b.get("HostIp", ""), "PrivatePort": int(port.split("/")[0]),
             "PublicPort": int(b["HostPort"]), "Type": "tcp"}
            for port, bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).items()
            for b in bindings or []]


class Engine:
    """hooks.engine's listing and removal over a list of containers, recorded."""

    def __init__(self, containers):
        self.live, self.removed, self.images_removed = list(containers), [], []

    def containers(self, app=None, **labels):
        return [c for c in self.live if app in (None, c.labels["gitd.app"])]

    def listed(self, app=None, **labels):
        """hooks.engine.Engine.listed: the listing's view, none inspected."""
        from hooks.engine import Listed
        return [Listed(c.name, c.name, c.labels, c.status,
                       ((c.attrs.get("State") or {}).get("Health") or {}).get("Status"),
                       listed_ports(c.attrs))
                for c in self.containers(app, **labels)]

    def container(self, name):
        return next((c for c in self.live if c.name == name), None)

    def host_port(self, container, port):
        from hooks.engine import Engine as Real
        return Real.host_port(self, container, port)

    def remove(self, container, timeout=0):
        self.live.remove(container)
        self.removed.append((container.name, timeout))

    def remove_image(self, tag):
        self.images_removed.append(tag)


def daemon_mid_deploy(tmp_path, containers):
    """A Gitd over `containers` as a crash left it: hello's v1 live (deploy
    seq 1), v2 still deploying (seq 2)."""
    from gitd.service import Gitd  # the whole daemon: imported only by the tests that use it

    store = Store(tmp_path / "gitd.db")
    store.create_app("hello")
    v1 = store.new_release("hello", status="succeeded", procfile={})
    store.set_live("hello", v1.version, store.take_seq("hello"))  # seq 1
    store.new_release("hello", status="deploying", procfile={})  # v2, interrupted
    store.take_seq("hello")  # seq 2
    gitd = Gitd(Settings(data_dir=tmp_path, instance="t", drain_seconds=0), store)
    gitd._engine = Engine(containers)
    return gitd


# --- swarm nodes -----------------------------------------------------------------------

MANAGER_ID = "ab8bihpm0v1r2a7c1juyyybbm"
WORKER_ID = "2vbmx6r5pmpk091lvcnlke8sx"


def node_attrs(node_id, hostname, role="worker", state="ready", availability="active",
               labels=None, leader=False):
    """A node as `docker node inspect` answers (the fields gitd reads, and some it does not)."""
    attrs = {"ID": node_id, "Version": {"Index": 10},
             "Spec": {"Role": role, "Availability": availability, "Labels": labels or {}},
             "Description": {"Hostname": hostname, "Engine": {"EngineVersion": "20.10.24"}},
             "Status": {"State": state, "Addr": "192.0.2.7"}}
    if role == "manager":
        attrs["ManagerStatus"] = {"Leader": leader, "Reachability": "reachable",
                                  "Addr": "192.0.2.7:2377"}
    return attrs


# --- git, with no user or system configuration -----------------------------------------

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}


def run_git(path, *args, when: int | None = None, **kw) -> subprocess.CompletedProcess:
    """`git ARGS` in `path`, checked; `when` (a Unix time) dates a commit."""
    env = dict(GIT_ENV)
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{when} +0000"
    return subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True, **kw)


# --- the files the installed package must hold -----------------------------------------

PACKAGES = ("gitd", "hooks", "buildpacks")


def modules():
    for package in PACKAGES:
        yield importlib.import_module(package)
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
            if not info.name.endswith(".__main__"):  # runs the CLI
                yield importlib.import_module(info.name)


def environments() -> dict[str, jinja2.Environment]:
    """"module:attribute" -> every jinja2 environment the code keeps."""
    return {f"{m.__name__}:{name}": value for m in modules() for name, value in vars(m).items()
            if isinstance(value, jinja2.Environment)}


def loader_roots(loader) -> list[Path]:
    if isinstance(loader, jinja2.FileSystemLoader):
        return [Path(p) for p in loader.searchpath]
    if isinstance(loader, jinja2.PackageLoader):
        package = importlib.import_module(loader.package_name)
        return [Path(package.__file__).parent / loader.package_path]
    raise AssertionError(f"teach this test the files of {type(loader).__name__}")


def data_paths() -> set[Path]:
    """Files and directories outside Python modules that modules point at."""
    found = {root for env in environments().values() for root in loader_roots(env.loader)}
    for module in modules():
        for value in vars(module).values():
            if isinstance(value, PurePath) and Path(value).is_relative_to(REPO) \
                    and Path(value).exists():
                found.add(Path(value))
    return found


def loaded_files() -> set[str]:
    """Every data file the code loads, relative to the install root."""
    files = set()
    for path in data_paths():
        for file in ([path] if path.is_file() else path.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".py":
                files.add(file.relative_to(REPO).as_posix())
    return files


# certificates: self-signed leaves and Traefik's acme.json entries

def pem(names: list[str], days: float = 60) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=90)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def entry(main: str, sans=(), days: float = 60) -> dict:
    domain = {"main": main, **({"sans": list(sans)} if sans else {})}
    return {"domain": domain, "certificate": base64.b64encode(pem([main, *sans], days)).decode(),
            "key": "a2V5", "Store": "default"}


def settings_with(tmp_path, certificates: list[dict]) -> Settings:
    settings = Settings(data_dir=tmp_path, https_port=8443)
    settings.tls_dir.mkdir(parents=True)
    settings.acme_storage.write_text(json.dumps(
        {"gitd": {"Account": {"Email": "ops@x.test"}, "Certificates": certificates}}))
    return settings


def leaf(names):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


# apps and keys

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHs6zJ0m4ZTqz1x8cGQkGkQm2nH8ZLm4q9Qy7J8XfLrA test"


def deployed(store, app="hello", procfile=None, config=None):
    """A release recorded as live, as a push would leave it."""
    release = store.new_release(app, status="succeeded", image_id="sha256:abc",
                                procfile=procfile or {}, config=config or {}, commit="c0ffee" * 6)
    store.set_live(app, release.version, 1)
    replace_config(store, app, store.get_config(app), release.config)
    return release


class NotifyRecorder:
    """A notifier (gitd.core.notify.installed) that keeps what was emitted."""

    def __init__(self):
        self.events = []

    def emit(self, app, event, data):
        self.events.append((app, event, data))
