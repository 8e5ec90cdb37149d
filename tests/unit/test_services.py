"""Services and storage without Docker: cron, validation, kinds, specs,
store migration, the backup scheduler's sense of "due"."""

import calendar
import sqlite3
import time
from types import SimpleNamespace

import os

import pytest

from gitd.core import validate
from gitd.core.config import Settings, load_settings
from gitd.core.errors import GitdError, UsageError
from gitd.core import cron
from gitd.services import KINDS, kind
from gitd.services.base import container_name, network_name, volume_name
from gitd.services.lifecycle import Services, backup_path
from hooks.specs import service_spec
from gitd.services.schedule import due
from gitd.core.store import Store
from hooks.specs import attach_storage


def utc(text: str) -> float:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M"))


def fmt(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %a", time.gmtime(ts))


# cron

@pytest.mark.parametrize("expr, after, expected", [
    ("0 3 * * *", "2026-01-01 02:59", "2026-01-01 03:00 Thu"),
    ("0 3 * * *", "2026-01-01 03:00", "2026-01-02 03:00 Fri"),
    ("*/15 * * * *", "2026-01-01 10:01", "2026-01-01 10:15 Thu"),
    ("5,35 9-10 * * *", "2026-01-01 10:36", "2026-01-02 09:05 Fri"),
    ("0 0 * * mon-fri", "2026-01-02 12:00", "2026-01-05 00:00 Mon"),  # Fri -> Mon
    ("0 0 * * 7", "2026-01-01 00:00", "2026-01-04 00:00 Sun"),  # 7 is Sunday too
    ("0 0 29 2 *", "2026-03-01 00:00", "2028-02-29 00:00 Tue"),
    ("0 12 13 * fri", "2026-01-01 00:00", "2026-01-02 12:00 Fri"),  # day OR weekday
    ("30 4 1 jan,jul *", "2026-02-01 00:00", "2026-07-01 04:30 Wed"),
    ("0-10/5 0 1 1 *", "2026-01-01 00:05", "2026-01-01 00:10 Thu"),
    ("59 23 31 12 *", "2026-12-31 23:59", "2027-12-31 23:59 Fri"),
])
def test_cron_next_run(expr, after, expected):
    assert fmt(cron.parse(expr).next_after(utc(after))) == expected


@pytest.mark.parametrize("expr", [
    "", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * 32 * *",
    "* * * 13 *", "* * * * 8", "*/0 * * * *", "5-1 * * * *", "a b c d e", "1,,2 * * * *",
    "0 0 31 2 *", "0 0 30 feb *", "x" * 200, "-1 * * * *", "1/2/3 * * * *", "* * * foo *",
    "999 * * * *", "*/100 * * * *",
])
def test_cron_refuses(expr):
    with pytest.raises(UsageError):
        cron.parse(expr)


def test_cron_text_is_normalised():
    assert cron.parse("  0   3 * *  * ").text == "0 3 * * *"


# validation

@pytest.mark.parametrize("path", ["/data", "/srv/app-data", "/var/lib/app/x.db"])
def test_mount_targets(path):
    assert validate.mount_target(path) == path


@pytest.mark.parametrize("path", ["data", "/", "/proc", "/proc/1", "/sys/x", "/dev", "/etc",
                                  "/a/../etc", "/a/./b", "//data", "/da ta", "/d\0", "/usr/lib",
                                  "/.gitd/busybox", "/" + "a" * 300])
def test_bad_mount_targets(path):
    with pytest.raises(UsageError):
        validate.mount_target(path)


def test_host_paths_refuse_the_socket_the_data_dir_and_symlinks_to_them(tmp_path):
    data = tmp_path / "gitd-data"
    (data / "repos").mkdir(parents=True)
    ok = tmp_path / "srv" / "app"
    ok.mkdir(parents=True)
    assert validate.host_path(str(ok), data) == str(ok)
    sneaky = tmp_path / "sneaky"
    sneaky.symlink_to(data / "repos")
    to_run = tmp_path / "to-run"
    to_run.symlink_to("/var/run")
    for bad in (str(data), str(data / "repos"), str(sneaky), str(to_run), str(tmp_path),
                "/", "/proc", "/var/run", "/run", "/dev", "/var/lib/docker", "/etc",
                "relative", "/srv/../etc", str(tmp_path / "missing")):
        with pytest.raises(UsageError):
            validate.host_path(bad, data)


def test_host_paths_refuse_podmans_store_and_the_engine_url_socket(tmp_path):
    data = tmp_path / "gitd-data"
    data.mkdir()
    engine_dir = tmp_path / "engine"
    engine_dir.mkdir()
    (engine_dir / "podman.sock").touch()
    url = f"unix://{engine_dir}/podman.sock"
    assert validate.host_path(str(engine_dir), data) == str(engine_dir)  # no such engine
    with pytest.raises(UsageError, match="podman.sock"):
        validate.host_path(str(engine_dir), data, url)
    assert "/var/lib/containers" in validate.FORBIDDEN_HOST_PATHS  # Podman's volumes, rootful
    if os.path.isdir("/var/lib/containers"):
        with pytest.raises(UsageError, match="/var/lib/containers"):
            validate.host_path("/var/lib/containers", data)


@pytest.mark.parametrize("text, expected", [("data:/data", ("data", "/data")),
                                            ("/srv/x:/data", ("/srv/x", "/data"))])
def test_mount_spec(text, expected):
    assert validate.mount_spec(text) == expected


@pytest.mark.parametrize("text", ["data", ":/data", "data:", "data:rel"])
def test_bad_mount_specs(text):
    with pytest.raises(UsageError):
        validate.mount_spec(text)


@pytest.mark.parametrize("bad", ["", "0", "80", "1023", "65536", "-1", "1e4", "abc", "8080 "])
def test_ports(bad):
    assert validate.host_port("5432") == 5432
    with pytest.raises(UsageError):
        validate.host_port(bad)


@pytest.mark.parametrize("bad", ["", "16;rm", "latest", "1.2.3.4", "1234", "16-alpine"])
def test_versions(bad):
    assert validate.service_version("15.4") == "15.4"
    with pytest.raises(UsageError):
        validate.service_version(bad)


# kinds

def svc(name="shop-db", kind_name="postgres", **extra):
    fields = dict(name=name, kind=kind_name, version="16", image="img", password="pw",
                  volume=volume_name("abcd1234", name), created_at=0.0, exposed_port=None,
                  schedule=None, keep=7, schedule_since=None, last_backup_at=None,
                  last_backup_ok=None, last_backup_message="")
    fields.update(extra)
    return SimpleNamespace(**fields)


def test_kinds_are_a_registry():
    assert set(KINDS) == {"postgres", "redis"}
    with pytest.raises(UsageError, match="unknown service kind"):
        kind("mysql")


def test_urls_and_link_names():
    pg, rd = kind("postgres"), kind("redis")
    assert pg.url(svc(), "h") == "postgres://postgres:pw@h:5432/shop_db"
    assert rd.url(svc(kind_name="redis"), "h") == "redis://default:pw@h:6379/0"
    assert pg.env_var("shop-db", set()) == "DATABASE_URL"
    assert pg.env_var("shop-db", {"DATABASE_URL"}) == "DATABASE_SHOP_DB_URL"
    assert rd.env_var("cache", {"DATABASE_URL"}) == "REDIS_URL"


def test_images_follow_the_setting_and_the_version():
    pg = kind("postgres")
    assert pg.image({}, "16") == "postgres:16-alpine"
    assert pg.image({"postgres": "mirror/pg:{version}"}, "15") == "mirror/pg:15"
    assert pg.image({"postgres": "gitd-ci/postgres:latest"}, "15") == "gitd-ci/postgres:latest"


def test_service_images_setting(tmp_path):
    (tmp_path / "gitd.toml").write_text('[service_images]\npostgres = "local/pg:{version}"\n')
    assert load_settings(tmp_path, environ={}).service_images == {"postgres": "local/pg:{version}"}
    env = {"GITD_SERVICE_IMAGES": "redis=r:1, postgres=p:2"}
    assert load_settings(tmp_path, environ=env).service_images == {"redis": "r:1", "postgres": "p:2"}
    with pytest.raises(GitdError):
        load_settings(tmp_path, environ={"GITD_SERVICE_IMAGES": "nonsense"})
    (tmp_path / "gitd.toml").write_text('service_images = "x"\n')
    with pytest.raises(GitdError):
        load_settings(tmp_path, environ={})


def test_service_spec_is_private_unless_exposed():
    settings = Settings(instance="abcd1234")
    spec = service_spec(settings, kind("postgres"), svc())
    assert spec["name"] == container_name("abcd1234", "shop-db") == "gitd-abcd1234-svc-shop-db"
    assert spec["networks"] == [network_name("abcd1234", "shop-db")]
    assert "ports" not in spec
    assert spec["restart_policy"] == {"Name": "unless-stopped"}
    assert spec["labels"]["gitd.instance"] == "abcd1234"
    assert spec["labels"]["gitd.service"] == "shop-db"
    assert spec["mounts"] == [{"type": "volume", "source": "gitd-abcd1234-svc-shop-db-data",
                               "target": "/var/lib/postgresql/data"}]
    assert spec["environment"]["POSTGRES_DB"] == "shop_db"
    exposed = service_spec(settings, kind("postgres"), svc(exposed_port=15432))
    assert exposed["ports"] == {"5432/tcp": ("127.0.0.1", 15432)}
    any_port = service_spec(settings, kind("redis"), svc(kind_name="redis", exposed_port=0))
    assert any_port["ports"] == {"6379/tcp": ("127.0.0.1", None)}


def test_storage_and_networks_are_appended_never_replaced():
    spec = {"networks": ["app-private"], "mounts": [{"type": "bind", "source": "/bb",
                                                     "target": "/.gitd/busybox"}]}
    attach_storage(spec, ["svc-net"], [{"type": "volume", "source": "v", "target": "/data"}])
    assert spec["networks"] == ["app-private", "svc-net"]
    assert [m["target"] for m in spec["mounts"]] == ["/.gitd/busybox", "/data"]
    assert attach_storage({}, [], []) == {}


def test_backups_are_dated_and_pruned_to_keep(tmp_path):
    settings = Settings(data_dir=tmp_path, instance="abcd1234")
    path = backup_path(settings, kind("postgres"), "db", utc("2026-01-02 03:04"))
    assert path == tmp_path / "backups" / "db" / "db-20260102T030400Z.dump"
    path.parent.mkdir(parents=True)
    for day in range(1, 6):
        backup_path(settings, kind("postgres"), "db", utc(f"2026-01-0{day} 03:00")).write_text("x")
    (path.parent / "db-20260101T000000Z-final.dump").write_text("keep me")
    services = Services(SimpleNamespace(settings=settings))
    removed = services.prune_backups(svc(name="db"), 2)
    assert len(removed) == 3
    left = sorted(p.name for p in path.parent.iterdir())
    assert left == ["db-20260101T000000Z-final.dump", "db-20260104T030000Z.dump",
                    "db-20260105T030000Z.dump"]


def test_a_backup_is_due_once_its_schedule_fired_since_the_last_attempt():
    s = svc(schedule="0 3 * * *", created_at=utc("2026-01-01 00:00"),
            schedule_since=utc("2026-01-01 12:00"))
    assert not due(s, utc("2026-01-02 02:59"))
    assert due(s, utc("2026-01-02 03:00"))
    s.last_backup_at = utc("2026-01-02 03:00")
    assert not due(s, utc("2026-01-02 23:00"))
    assert due(s, utc("2026-01-05 10:00"))  # missed while gitd was down: runs once
    assert not due(svc(schedule=None), utc("2030-01-01 00:00"))


# store

def test_services_links_and_mounts_in_the_store(tmp_path):
    store = Store(tmp_path / "gitd.db")
    store.create_app("shop")
    made = store.create_service(name="db", kind="postgres", version="16", image="i",
                                password="p", volume="v")
    assert made.keep == 7 and made.last_backup_ok is None
    with pytest.raises(GitdError, match="already exists"):
        store.create_service(name="db", kind="redis", version="7", image="i", password="p",
                             volume="v")
    store.add_link("db", "shop", "DATABASE_URL")
    assert store.links_of_app("shop") == {"db": "DATABASE_URL"}
    assert store.links_of_service("db") == {"shop": "DATABASE_URL"}
    store.update_service("db", last_backup_ok=False, last_backup_message="boom")
    assert store.get_service("db").last_backup_ok is False
    mounts = [{"source": "v1", "target": "/data", "type": "volume"}]
    store.set_mounts("shop", mounts)
    assert store.get_mounts("shop") == mounts
    release = store.new_release("shop", mounts=mounts)
    assert store.get_release("shop", release.version).mounts == mounts
    store.delete_app("shop")
    assert store.links_of_service("db") == {} and store.get_mounts("shop") == []


def test_an_existing_database_gains_the_new_tables(tmp_path):
    path = tmp_path / "gitd.db"
    Store(path).create_app("old")
    conn = sqlite3.connect(path)
    for table in ("services", "service_links", "mounts"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("ALTER TABLE releases DROP COLUMN mounts")
    conn.execute("INSERT INTO releases (app, version, status, kind, config, procfile) "
                 "VALUES ('old', 1, 'succeeded', 'push', '{}', '{}')")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.get_release("old", 1).mounts == []
    assert store.list_services() == [] and store.get_mounts("old") == []


def test_the_scheduler_backs_up_what_is_due_and_records_failures(tmp_path):
    from gitd.services.schedule import BackupScheduler
    from hooks.locks import AppLocks

    store = Store(tmp_path / "gitd.db")
    store.create_service(name="db", kind="postgres", version="16", image="i", password="p",
                         volume="v", created_at=utc("2026-01-01 00:00"),
                         schedule="0 3 * * *", schedule_since=utc("2026-01-01 00:00"))
    store.create_service(name="idle", kind="redis", version="7", image="i", password="p",
                         volume="v")
    settings = Settings(data_dir=tmp_path, instance="abcd1234")
    (tmp_path / "backups" / "db").mkdir(parents=True)
    (tmp_path / "backups" / "db" / "db-x.dump.partial").write_text("cut short")

    class FailingServices:
        def backup_to_file(self, svc):
            raise GitdError("the container of db is missing")

    gitd = SimpleNamespace(store=store, settings=settings, locks=AppLocks(),
                           services=FailingServices())
    scheduler = BackupScheduler(gitd, tick=3600)
    scheduler.start()
    assert list((tmp_path / "backups" / "db").iterdir()) == []
    assert scheduler.run_due(utc("2026-01-01 02:00")) == []
    assert scheduler.run_due(utc("2026-01-01 03:00")) == ["db"]
    failed = store.get_service("db")
    assert failed.last_backup_ok is False and "missing" in failed.last_backup_message
    assert scheduler.run_due(utc("2026-01-01 03:00")) == []  # recorded: not retried at once
    scheduler.stop()
    assert scheduler.run_due(utc("2026-02-01 03:00")) == []


def test_doctor_fails_on_a_failed_backup_until_one_succeeds(tmp_path):
    import io

    from gitd.doctor import Report, check_service_backups

    settings = Settings(data_dir=tmp_path)
    store = Store(settings.db_path)
    store.create_service(name="db", kind="postgres", version="16", image="i", password="p",
                         volume="v", schedule="0 3 * * *")
    store.create_service(name="quiet", kind="redis", version="7", image="i", password="p",
                         volume="v")

    def report() -> tuple[int, str]:
        out = io.StringIO()
        r = Report(out)
        check_service_backups(r, settings)
        return r.failures, out.getvalue()

    failures, text = report()
    assert failures == 0 and "scheduled (0 3 * * *) but none made yet" in text
    assert "quiet" not in text
    store.update_service("db", last_backup_ok=False, last_backup_message="disk full")
    failures, text = report()
    assert failures == 1 and "the last backup failed: disk full" in text
    store.update_service("db", last_backup_ok=True, last_backup_message="db-x.dump (9 bytes)")
    assert report()[0] == 0


class RecordingEngine:
    """Runs nothing: records each command gitd runs in a service's container."""

    def __init__(self):
        self.calls = []

    def exec(self, container, argv, stdin=None, stdout=None, environment=None, user=None):
        if stdin is not None:
            list(stdin)
        self.calls.append((argv, environment or {}))
        return 0, b"1"

    def start(self, container):
        pass


def test_postgres_backup_and_restore_log_in_with_the_password_gitd_holds():
    """A hardened image asks for the password on the local socket too (the
    official one trusts it): every command gitd runs in it sends the password,
    over TCP as a client would (peer-auth sockets refuse root)."""
    pg, service = kind("postgres"), svc()
    assert pg.exec_env(service) == {"PGPASSWORD": "pw"}
    assert pg.dump_argv(service)[:5] == ["pg_dump", "-h", "127.0.0.1", "-U", "postgres"]
    assert pg.version_argv(service)[:5] == ["psql", "-h", "127.0.0.1", "-U", "postgres"]
    engine = RecordingEngine()
    pg.restore(engine, "container", service, iter([b"PGDMP..."]), emit=lambda line: None)
    programs = [argv[0] for argv, _ in engine.calls]
    assert "pg_restore" in programs and programs.count("psql") >= 4
    for argv, environment in engine.calls:
        assert environment == {"PGPASSWORD": "pw"}, argv
        assert argv[1:5] == ["-h", "127.0.0.1", "-U", "postgres"], argv


def test_redis_commands_send_its_password():
    rd, service = kind("redis"), svc(kind_name="redis")
    assert rd.exec_env(service) == {"REDISCLI_AUTH": "pw"}
    engine = RecordingEngine()
    rd.restore(engine, "container", service, iter([b"REDIS..."]), emit=lambda line: None)
    for argv, environment in engine.calls:
        if argv[0] == "redis-cli":
            assert environment == {"REDISCLI_AUTH": "pw"}, argv
