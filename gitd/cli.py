"""`gitd init | serve | doctor | keys | install-systemd | backup | restore`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import asyncssh
import structlog

from gitd.core import config, log as gitd_log
from gitd.core.errors import GitdError

log = structlog.get_logger("gitd")


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="state directory (env GITD_DATA_DIR, default /var/lib/gitd)")


DOCTOR_PORT_FLAGS = ("ssh_host", "ssh_port", "http_host", "http_port", "https_port",
                     "traefik_api_port", "traefik_api_url")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gitd", description="A git-push PaaS for one VPS.")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("init", help="create the data dir and register the first admin key")
    _add_data_dir(p)
    p.add_argument("--admin-key", help="path to the admin's public key (or - for stdin)")
    p.add_argument("--admin-name", default="admin")

    p = sub.add_parser("serve", help="run the SSH server, pipeline and (managed) Traefik")
    _add_data_dir(p)
    p.add_argument("--ssh-host")
    p.add_argument("--ssh-port", type=int)
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int)
    p.add_argument("--https-port", type=int, help="serve apps over HTTPS here (0 = off)")
    p.add_argument("--acme-email", help="get certificates from the ACME CA for this account")
    p.add_argument("--acme-ca-server", help="the ACME CA's directory URL (default Let's Encrypt)")
    p.add_argument("--domain")
    p.add_argument("--api-port", type=int, help="serve the HTTP API on 127.0.0.1 here (0 = off)")
    p.add_argument("--traefik", choices=("managed", "external"))
    p.add_argument("--traefik-api-port", type=int)
    p.add_argument("--traefik-api-url")
    p.add_argument("--log-format", choices=("auto", "json", "console"))
    p.add_argument("--scheduler", choices=config.SCHEDULERS,
                   help="run apps as local containers (docker, the default) or swarm services")
    p.add_argument("--engine-url", help="the container engine's API: Docker's, or Podman's "
                                        "(unix:///run/podman/podman.sock); default DOCKER_HOST, "
                                        "else Docker's socket")

    p = sub.add_parser("doctor", help="check this machine and print fixes")
    _add_data_dir(p)
    p.add_argument("--scheduler", choices=config.SCHEDULERS,
                   help="check for this scheduler (swarm: the swarm's manager and nodes)")
    # the ports to check, as `serve` takes them (a running gitd's own by default)
    for flag in DOCTOR_PORT_FLAGS:
        p.add_argument(f"--{flag.replace('_', '-')}", type=int if flag.endswith("port") else str)
    p.add_argument("--traefik", choices=("managed", "external"))
    p.add_argument("--engine-url", help="check this engine (as serve takes it)")

    p = sub.add_parser("keys", help="manage keys locally (recovery)")
    _add_data_dir(p)
    p.add_argument("action", choices=("list", "add", "remove"))
    p.add_argument("name", nargs="?")
    p.add_argument("--admin", action="store_true")

    p = sub.add_parser("install-systemd", help="write systemd units for this install")
    _add_data_dir(p)
    p.add_argument("--dest", default="/etc/systemd/system")
    p.add_argument("--user", default="root")
    p.add_argument("--engine-url", help="the engine the units wait for and gitd and Traefik "
                                        "use (unix:///run/podman/podman.sock: podman.socket)")

    p = sub.add_parser("backup", help="write one archive of this gitd, while it serves")
    _add_data_dir(p)
    p.add_argument("--to", required=True, dest="archive", help="the archive to write (.tar.gz)")
    p.add_argument("--volumes", action="store_true", help="with the apps' named volumes")

    p = sub.add_parser("restore", help="make a new data dir from a backup (the next serve "
                                       "brings the apps back)")
    _add_data_dir(p)
    p.add_argument("--from", required=True, dest="archive", help="the archive gitd backup wrote")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in ("cmd",)}
    try:
        settings = config.load_settings(flags=_setting_flags(flags))
        gitd_log.configure(settings.log_format)
        return COMMANDS[args.cmd](settings, args)
    except GitdError as exc:
        print(f" !     {exc.message}", file=sys.stderr)
        return exc.exit_status


def _setting_flags(flags: dict) -> dict:
    known = set(config.Settings.__dataclass_fields__)
    return {k: v for k, v in flags.items() if k in known}


def cmd_init(settings: config.Settings, args) -> int:
    from gitd.keys import register
    from gitd.core.store import Store

    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    for sub in (settings.repos_dir, settings.work_dir):
        sub.mkdir(exist_ok=True)
    if not settings.host_key_path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519")
        fd = os.open(settings.host_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key())
        print(f"created host key {settings.host_key_path}")
    store = Store(settings.db_path)
    settings.db_path.chmod(0o600)
    if args.admin_key:
        text = sys.stdin.read() if args.admin_key == "-" else Path(args.admin_key).expanduser().read_text()
        key = register(store, args.admin_name, text, is_admin=True)
        print(f"registered admin key {key.name} ({key.fingerprint})")
    elif store.admin_count() == 0:
        print("warning: no admin key yet; run gitd init --admin-key ~/.ssh/id_ed25519.pub", file=sys.stderr)
    print(f"initialised {data}")
    return 0


def cmd_keys(settings: config.Settings, args) -> int:
    from gitd.keys import register
    from gitd.core.store import Store

    store = Store(settings.db_path)
    if args.action == "list":
        for key in store.list_keys():
            print(f"{key.name}\t{'admin' if key.is_admin else 'deployer'}\t{key.fingerprint}")
    elif not args.name:
        raise GitdError(f"keys {args.action} needs a NAME")
    elif args.action == "add":
        key = register(store, args.name, sys.stdin.read(), args.admin)
        print(f"added {key.name} ({key.fingerprint})")
    else:
        store.remove_key(args.name)
        print(f"removed {args.name}")
    return 0


def cmd_doctor(settings: config.Settings, args) -> int:
    from gitd.doctor import run_doctor

    given = {k: getattr(args, k) for k in (*DOCTOR_PORT_FLAGS, "traefik", "engine_url")
             if getattr(args, k, None) is not None}
    return run_doctor(settings, nix_needed=_nix_needed(settings), flags=given)


def _nix_needed(settings: config.Settings) -> bool:
    from gitd.core.store import Store

    if not settings.db_path.exists():
        return False
    try:
        store = Store(settings.db_path)
        return any(a.settings.get("buildpack") == "nix" or
                   any(r.buildpack == "nix" for r in store.releases(a.name)[:1])
                   for a in store.list_apps())
    except Exception:
        return False


def cmd_install_systemd(settings: config.Settings, args) -> int:
    from gitd.units import engine_unit, install_units

    written = install_units(settings, dest=Path(args.dest), user=args.user)
    for path in written:
        print(f"wrote {path}")
    if _pin_external_traefik(settings):
        print(f"set traefik = \"external\" in {settings.data_dir / 'gitd.toml'}")
    podman = "podman.socket " if engine_unit(settings) == "podman.socket" else ""
    print(f"next: systemctl daemon-reload && systemctl enable --now {podman}traefik gitd")
    return 0


def _pin_external_traefik(settings: config.Settings) -> bool:
    """With Traefik in its own unit, every gitd command (doctor too) must
    agree that it is external."""
    path = settings.data_dir / "gitd.toml"
    text = path.read_text() if path.exists() else ""
    if any(line.split("=")[0].strip() in ("traefik", "traefik_api_url") for line in text.splitlines()):
        return False
    url = f"http://127.0.0.1:{settings.traefik_api_port}"
    path.write_text(text + ("" if not text or text.endswith("\n") else "\n")
                    + f'traefik = "external"\ntraefik_api_url = "{url}"\n')
    return True


def _skip_unused_imports() -> None:
    """sqlite-utils maps numpy and pandas values when they import; gitd
    stores neither, and numpy alone is ~12 MB of an idle daemon's memory on
    a machine that happens to have it. A None entry makes those imports
    fail as if they were not installed (only in the daemon's process)."""
    for name in ("numpy", "pandas"):
        sys.modules.setdefault(name, None)


def cmd_serve(settings: config.Settings, args) -> int:
    if not settings.host_key_path.exists() or not settings.db_path.exists():
        raise GitdError(f"{settings.data_dir} is not initialised; run: gitd init --data-dir "
                        f"{settings.data_dir} --admin-key ~/.ssh/id_ed25519.pub")
    _skip_unused_imports()
    from gitd.daemon import serve

    return asyncio.run(serve(settings))


def cmd_backup(settings: config.Settings, args) -> int:
    from gitd import backup

    backup.backup(settings, Path(args.archive), print, volumes=args.volumes)
    return 0


def cmd_restore(settings: config.Settings, args) -> int:
    from gitd import backup

    backup.restore(settings, Path(args.archive), print)
    return 0


COMMANDS = {
    "init": cmd_init,
    "serve": cmd_serve,
    "doctor": cmd_doctor,
    "keys": cmd_keys,
    "install-systemd": cmd_install_systemd,
    "backup": cmd_backup,
    "restore": cmd_restore,
}
