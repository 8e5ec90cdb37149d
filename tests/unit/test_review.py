"""Found in review of the merged #10/#11/#14/#15 code: a push's right is asked
again once its pack is stored, and a refused lock rejects the refs cleanly."""

import contextlib

import pytest

from gitd import gitserve
from gitd.core.config import Settings
from gitd.core.errors import GitdError, NotFound, PermissionDenied
from gitd.service import Gitd
from gitd.core.store import Store

ZERO = b"0" * 40


def _daemon(tmp_path):
    store = Store(tmp_path / "gitd.db")
    store.create_app("hello")
    store.add_key("dev", "SHA256:dev", "ssh-ed25519 AAAA dev", False)
    store.grant("hello", "dev")
    return Gitd(Settings(data_dir=tmp_path, instance="t", lock_wait=0.1), store), store.get_key("dev")


def _enter(gitd, key):
    with gitd.push_lock("hello", key):
        return True


def test_a_push_keeps_its_right_only_while_its_key_and_grant_stand(tmp_path):
    gitd, dev = _daemon(tmp_path)
    assert _enter(gitd, dev)
    gitd.store.revoke("hello", "dev")
    with pytest.raises(PermissionDenied, match="lost its access"):
        _enter(gitd, dev)
    gitd.store.grant("hello", "dev")
    gitd.store.remove_key("dev")
    with pytest.raises(PermissionDenied, match="removed"):
        _enter(gitd, dev)


def test_a_push_to_an_app_destroyed_while_it_arrived_is_refused(tmp_path):
    gitd, dev = _daemon(tmp_path)
    gitd.store.delete_app("hello")
    with pytest.raises(NotFound, match="destroyed"):
        _enter(gitd, dev)


def test_the_lock_is_given_back_after_a_refusal(tmp_path):
    gitd, dev = _daemon(tmp_path)
    gitd.store.revoke("hello", "dev")
    with pytest.raises(PermissionDenied):
        _enter(gitd, dev)
    with gitd.app_lock("hello"):
        pass


class _Proto:
    def write_pkt_line(self, line):
        pass


def test_a_lock_that_refuses_rejects_every_ref_instead_of_hanging_up(tmp_path):
    repo = gitserve.create_repo(tmp_path, "hello")

    @contextlib.contextmanager
    def refusing(notify):
        raise GitdError("another deploy of hello is still running; try again later")
        yield

    handler = gitserve.DeployingReceivePackHandler(
        gitserve._OneRepoBackend(repo), ["."], _Proto(), lambda sha, sink: None, 1 << 20,
        lambda data: None, refusing)
    refs = [(b"1" * 40, ZERO, b"refs/heads/feature"), (b"2" * 40, ZERO, b"refs/heads/other")]
    statuses = list(handler._apply_pack(refs))  # deletions only: no pack to read
    assert statuses[0] == (b"unpack", b"ok")
    assert statuses[1:] == [(b"refs/heads/feature", b"another deploy of hello is still running; try again later"),
                            (b"refs/heads/other", b"another deploy of hello is still running; try again later")]


def test_no_repository_gc_while_a_git_session_uses_the_repository(tmp_path, monkeypatch):
    """A pack stored during a gc lost the objects the gc had found
    unreachable (a refused push's, sent again): the push then pointed its
    branch at missing objects. The app's lock no longer covers the pack's
    arrival, so sessions and gc exclude each other on their own."""
    import threading

    from gitd import repos

    gitd, _ = _daemon(tmp_path)
    ran = []
    monkeypatch.setattr(repos, "collect", lambda path, app: ran.append(app))
    with gitd.using_repo("hello"):
        assert gitd.collect_repo("hello") is False
    assert ran == []
    assert gitd.collect_repo("hello") is True and ran == ["hello"]

    collecting, finish = threading.Event(), threading.Event()

    def slow_collect(path, app):
        collecting.set()
        finish.wait(10)
        ran.append("done")

    monkeypatch.setattr(repos, "collect", slow_collect)
    gc = threading.Thread(target=gitd.collect_repo, args=("hello",))
    gc.start()
    assert collecting.wait(10)
    entered = []

    def session():
        with gitd.using_repo("hello"):
            entered.append(list(ran))

    push = threading.Thread(target=session)
    push.start()
    push.join(0.3)
    assert entered == []  # waits for the gc
    finish.set()
    gc.join(10)
    push.join(10)
    assert entered == [["hello", "done"]]


def test_a_prune_after_a_background_retirement_waits_its_turn_for_the_app(tmp_path):
    """The retirement runs beside the next command of the app: a rollback to
    an old release re-tags its image, and a prune of that release by image
    id then deleted the image under the rollback's deploy."""
    import threading

    from hooks.events import Progress
    from hooks.pipeline import Pipeline

    gitd, _ = _daemon(tmp_path)
    pipeline = Pipeline(gitd.settings, gitd.store, engine=None,
                        try_lock=lambda app: gitd.locks.hold(app, 0))
    pruned = []
    pipeline.prune = lambda app: pruned.append((app, gitd.locks.busy()))
    progress = Progress(lambda line: None, "hello")

    def in_background():
        t = threading.Thread(target=pipeline._prune_after_retirement,
                             args=("hello", progress, threading.get_ident()))
        t.start()
        t.join(10)

    with gitd.locks.hold("hello", 0):  # a rollback of hello is running
        in_background()
        assert pruned == []
        # the deploy itself (nothing to retire) prunes under its own lock
        pipeline._prune_after_retirement("hello", progress, threading.get_ident())
        assert pruned == [("hello", {"hello"})]
    in_background()
    assert pruned[1] == ("hello", {"hello"})  # under the app's lock


@pytest.mark.parametrize("drain,stop_timeout,used", [(float("inf"), 5, 5), (0, "soon", 30),
                                                     ("x", 1e999, 30)])
def test_reconcile_retires_with_drain_settings_stored_before_they_were_checked(tmp_path, drain,
                                                                                stop_timeout, used):
    """A value stored before checks:set checked its range (the pipeline bounds
    it again) made the start-up retirement crash gitd's start (ValueError)
    or fail in its thread (an infinite drain), leaving old containers up."""
    from tests.fakes import app_container, daemon_mid_deploy

    old, new = app_container("hello", 1, 1), app_container("hello", 2, 2)
    gitd = daemon_mid_deploy(tmp_path, [old, new])
    gitd.store.update_app_settings("hello", drain=drain, stop_timeout=stop_timeout)
    gitd.reconcile()
    assert gitd.wait_adoptions(10) and gitd.retirements.wait(10)
    assert gitd._engine.live == [new]
    assert gitd._engine.removed == [(old.name, used)]


@pytest.mark.parametrize("dockerfile", [
    "FROM x\nLABEL traefik.enable=true\n",
    'FROM x\nLABEL a=1 "Traefik.HTTP.Routers.x.Rule"="Host(`v.example`)"\n',
    "FROM x\nLABEL traefik.http.routers.x.rule Host(`v.example`)\n",  # the legacy form
    "FROM x\nLABEL a=1 \\\n  traefik.tcp.routers.all.rule=HostSNI(`*`)\n",
    "FROM x\nARG K=traefik.enable\nLABEL ${K}=true\n",
    "FROM x\nLABEL $K=true\n",
    "FROM x\nONBUILD LABEL traefik.enable=true\n",
    "FROM x\nLABEL gitd.instance=abc gitd.app=victim\n",
    "# escape=`\nFROM x\nLABEL a=1 `\n  traefik.enable=true\n",
])
def test_a_dockerfile_label_gitd_or_traefik_reads_is_refused_before_the_build(dockerfile):
    """A build's step containers carry the labels of the image being built,
    and Traefik routes running containers: `LABEL traefik...` plus
    `RUN httpd -f` served another app's host for the whole build (up to
    build_timeout), before the deploy-time check of the image could refuse it."""
    from buildpacks.dockerfile import check_labels
    from gitd.core.errors import BuildError

    with pytest.raises(BuildError, match="LABEL .*Traefik labels"):
        check_labels(dockerfile)


def test_ordinary_labels_pass():
    from buildpacks.dockerfile import check_labels

    check_labels('FROM x\nLABEL version=$VERSION maintainer="a b" org.opencontainers.image.title=x\n'
                 "LABEL description a gitd.app traefik.enable\n")


@pytest.mark.parametrize("config", [{"Labels": {"traefik.enable": "true"}},
                                    {"OnBuild": ["LABEL traefik.http.routers.x.rule=Host(`v.example`)"]}])
def test_a_base_image_whose_labels_traefik_reads_is_refused(config):
    from types import SimpleNamespace

    from buildpacks.dockerfile import check_references
    from gitd.core.errors import BuildError

    image = SimpleNamespace(id="sha256:" + "a" * 64, tags=["base/x:latest"], attrs={"Config": config})
    request = SimpleNamespace(app="evil", image_owners=lambda image_id: [],
                              docker=SimpleNamespace(images=SimpleNamespace(get=lambda ref: image)))
    with pytest.raises(BuildError, match="Traefik labels"):
        check_references(request, "FROM base/x:latest\n")
    image.attrs = {"Config": {"Labels": {"org.opencontainers.image.title": "x"}}}
    check_references(request, "FROM base/x:latest\n")


@pytest.mark.parametrize("dockerfile", ["FROM\tgitd/victim:v1\n",
                                        "FROM base\nCOPY\t--from=gitd/victim:v1 /www /w\n",
                                        "FROM base\nONBUILD\tCOPY\t--from=gitd/victim:v1 /www /w\n",
                                        "FROM base\nRUN\t--mount=type=bind,from=gitd/victim:v1,target=/x true\n"])
def test_a_tab_after_the_instruction_still_names_the_images_read(dockerfile):
    """Docker splits an instruction from its arguments at any whitespace;
    the reference check split at a space only, so `FROM<tab>gitd/victim:v1`
    read another app's image unchecked."""
    from buildpacks import dockerfile_refs

    refs, _ = dockerfile_refs.references(dockerfile)
    assert "gitd/victim:v1" in [r.image for r in refs]


def test_a_tab_after_label_is_still_a_label():
    from buildpacks.dockerfile import check_labels
    from gitd.core.errors import BuildError

    for text in ("FROM x\nLABEL\ttraefik.enable=true\n", "FROM x\nONBUILD\tLABEL\ttraefik.enable=true\n"):
        with pytest.raises(BuildError, match="Traefik labels"):
            check_labels(text)


def test_a_byte_order_mark_does_not_hide_the_first_from():
    """Docker skips a UTF-8 BOM before the first instruction; the check read
    `\\ufeffFROM` as an unknown instruction and let gitd/<other> through."""
    from buildpacks import dockerfile_refs

    refs, _ = dockerfile_refs.references("\ufeffFROM gitd/victim:v1\n")
    assert [r.image for r in refs] == ["gitd/victim:v1"]


@pytest.mark.parametrize("dockerfile", [
    "FROM base\nRUN echo \\\x85\nFROM gitd/victim:v1\n",  # NEL: no line break, no continuation for Docker
    "FROM base\nRUN echo \\\u2028\nFROM gitd/victim:v1\n",
    "FROM base\r\nRUN echo \\\r\n  ok\r\nFROM gitd/victim:v1\r\n",
])
def test_lines_and_continuations_are_read_as_docker_reads_them(dockerfile):
    from buildpacks import dockerfile_refs

    refs, _ = dockerfile_refs.references(dockerfile)
    assert "gitd/victim:v1" in [r.image for r in refs]


@pytest.mark.parametrize("dockerfile,image", [
    ("FROM gi\\\ntd/victim:v1\n", "gitd/victim:v1"),
    ("FROM gitd/vic\\\ntim:v1\n", "gitd/victim:v1"),
    ("# escape=`\nFROM gitd/vic`\ntim:v1\n", "gitd/victim:v1"),
    ("FROM base\nCOPY --from=gitd/vic\\\n# a comment\ntim:v1 /a /b\n", "gitd/victim:v1"),
    ("FROM base AS b\nRUN a \\\n    b\nFROM \\\n  gitd/victim:v1\n", "gitd/victim:v1"),
])
def test_continued_lines_join_as_docker_joins_them(dockerfile, image):
    """Docker joins `FROM gi\\` and `td/victim:v1` with no space: the check
    read `gi` (no such image: let through) while Docker read gitd/victim."""
    from buildpacks import dockerfile_refs

    refs, _ = dockerfile_refs.references(dockerfile)
    assert image in [r.image for r in refs]


@pytest.mark.parametrize("dockerfile", [
    "FROM x\nADD http://127.0.0.1:8080/api /x\n",
    "FROM x\nADD --chown=1:1 http://169.254.169.254/latest/meta-data/ /x\n",
    'FROM x\nADD ["https://127.0.0.1/secret", "/x"]\n',
    'FROM x\nADD ["http\\u003a//127.0.0.1/secret", "/x"]\n',
    "FROM x\nARG U=http://127.0.0.1/\nADD $U /x\n",
    "FROM x\nADD a.txt ${U} /dir/\n",
    "FROM x\nONBUILD ADD http://127.0.0.1/ /x\n",
    "FROM x\nADD\thttp://127.0.0.1/ /x\n",
])
def test_add_of_a_url_is_refused_before_the_build(dockerfile):
    """dockerd downloads an ADD URL itself, in the host's network namespace:
    a deployer's build read services on the host's loopback (and a cloud's
    metadata address), whatever the build network."""
    from buildpacks.dockerfile import check_remote_sources
    from gitd.core.errors import BuildError

    with pytest.raises(BuildError, match="download it from the host"):
        check_remote_sources(dockerfile)


def test_add_of_repository_files_passes():
    from buildpacks.dockerfile import check_remote_sources

    check_remote_sources('FROM x\nADD app.tar.gz /srv/\nADD --chown=1:1 a b /dst/\n'
                         'ADD ["with space.txt", "/x"]\nADD conf $HOME/\n')


@pytest.mark.parametrize("ref", ["127.0.0.1:5000/secret:1", "localhost:5000/x",
                                 "10.0.0.5/team/app:1", "169.254.169.254/x"])
def test_a_base_image_from_the_hosts_or_a_private_registry_is_refused(ref):
    """dockerd pulls a missing FROM image from the host's network (with the
    credentials docker-py sends from gitd's user): a deployer could pull a
    private registry's images the host can reach."""
    from types import SimpleNamespace

    import docker.errors

    from buildpacks.dockerfile import check_references
    from gitd.core.errors import BuildError

    def missing(name):
        raise docker.errors.ImageNotFound(name)

    request = SimpleNamespace(app="evil", image_owners=lambda image_id: [],
                              docker=SimpleNamespace(images=SimpleNamespace(get=missing)))
    with pytest.raises(BuildError, match="private network's registry"):
        check_references(request, f"FROM {ref}\n")
    check_references(request, "FROM python:3.12-slim\nCOPY --from=ghcr.io/x/y:1 /a /b\n")
