"""Deployments (issue #23): rows, status moves, the bounded log followed
live, the pipeline's entry points recording them, refs and image references."""

import threading
import time

import pytest
from dulwich.objects import Blob, Commit, Tag, Tree
from dulwich.repo import Repo

from gitd.core import validate
from gitd.core.config import Settings
from gitd.core.errors import (
    Conflict,
    DeployError,
    GitdError,
    NotFound,
    PermissionDenied,
    UsageError,
)
from gitd.core.store import Store
from gitd.verbs import Session
from gitd.verbs import deployments as verbs
from hooks import deployments
from hooks.deployments import Deployments, LogTail
from hooks.pipeline import Pipeline


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "gitd.db")
    s.add_key("admin", "SHA256:admin", "ssh-ed25519 AAAA admin", True)
    s.add_key("dev", "SHA256:dev", "ssh-ed25519 AAAA dev", False)
    s.create_app("hello")
    s.create_app("other")
    s.grant("hello", "dev")
    return s


# the log

def test_log_tail_keeps_the_last_bytes_and_says_how_many_went():
    tail = LogTail(100)
    for i in range(50):
        tail.append(f"line {i:03d}")
    assert tail.total == 50 * 9
    assert tail.text.startswith(f"[{50 * 9 - tail.total + tail.dropped} bytes of earlier output dropped")
    kept = tail.text.split("\n", 1)[1]
    assert kept.endswith("line 049\n") and len(kept) <= 100 and "line 000" not in kept
    # a follower that fell behind the cap is told, then gets what is kept
    text, offset = tail.since(0)
    assert text.startswith(f"[{tail.dropped} bytes dropped]") and offset == tail.total
    assert tail.since(tail.total) == ("", tail.total)
    assert tail.since(tail.total - 9) == ("line 049\n", tail.total)


def test_a_huge_line_is_cut_to_the_cap():
    tail = LogTail(64)
    tail.append("x" * 10_000)
    assert len(tail.text.split("\n", 1)[1]) <= 65


# status moves

def test_a_recorded_deploy_moves_pending_building_deploying_succeeded(store):
    recorder = Deployments(store, 1024)
    seen, statuses = [], []
    with recorder.record("hello", "push", seen.append, "building", by="admin", commit="c" * 40) as run:
        statuses.append(store.get_deployment(run.id).status)
        run("-----> Building")
        run.move("deploying", release=3)
        statuses.append(store.get_deployment(run.id).status)
    row = store.deployments("hello")[0]
    assert statuses == ["building", "deploying"]
    assert (row.status, row.trigger, row.by, row.release) == ("succeeded", "push", "admin", 3)
    assert row.log == "-----> Building\n" and seen == ["-----> Building"]
    assert row.created_at <= row.started_at <= row.finished_at
    assert recorder.running(row.id) is None


def test_a_failed_deploy_is_failed_with_its_error_once_in_the_log(store):
    recorder = Deployments(store, 1024)
    with pytest.raises(DeployError):
        with recorder.record("hello", "config", None, "deploying") as run:
            run(" !     the new container did not become healthy")
            raise DeployError("the new container did not become healthy")
    row = store.get_deployment(run.id)
    assert row.status == "failed" and row.error == "the new container did not become healthy"
    assert row.log.count("did not become healthy") == 1
    with pytest.raises(KeyError):
        with recorder.record("hello", "config", None, "deploying") as run:
            raise KeyError("x")
    row = store.get_deployment(run.id)
    assert row.status == "failed" and "internal error (KeyError)" in row.log


def test_a_pending_deployment_is_taken_up_cancelled_or_failed(store):
    recorder = Deployments(store, 1024)
    pending = recorder.create("hello", "api", by="dev", ref="main")
    assert store.get_deployment(pending.id).status == "pending"
    with recorder.record("hello", "api", None, "building", pending.id, commit="a" * 40):
        pass
    row = store.get_deployment(pending.id)
    assert (row.status, row.ref, row.commit) == ("succeeded", "main", "a" * 40)
    with pytest.raises(GitdError, match="not pending"):  # an ended one cannot run again
        with recorder.record("hello", "api", None, "building", pending.id):
            pass
    gone = recorder.create("hello", "api")
    recorder.cancel(gone.id, "app 'hello' was destroyed")
    busy = recorder.create("hello", "api")
    recorder.fail(busy.id, GitdError("another deploy of hello is still running; try again later"))
    assert store.get_deployment(gone.id).status == "cancelled"
    assert store.get_deployment(busy.id).status == "failed"
    with pytest.raises(ValueError):
        recorder.create("hello", "whatever")


def test_unfinished_deployments_end_at_start(store):
    pending = store.new_deployment("hello", "api")
    building = store.new_deployment("hello", "push")
    store.update_deployment(building.id, status="building")
    finished = store.new_deployment("hello", "push", release=4)
    store.update_deployment(finished.id, status="deploying")
    done = store.new_deployment("hello", "push")
    store.update_deployment(done.id, status="succeeded")
    ended = store.end_unfinished_deployments("interrupted", {("hello", 4)})
    assert {d.id for d in ended} == {pending.id, building.id, finished.id}
    status = {d.id: d.status for d in store.deployments("hello")}
    assert status == {pending.id: "cancelled", building.id: "failed", finished.id: "succeeded",
                      done.id: "succeeded"}
    assert "interrupted" in store.get_deployment(building.id).log


def test_rows_are_trimmed_and_go_with_their_app(store, monkeypatch):
    monkeypatch.setattr(deployments, "KEEP_ROWS", 5)
    recorder = Deployments(store, 1024)
    for _ in range(8):
        with recorder.record("hello", "restart", None, "deploying"):
            pass
    assert len(store.deployments("hello")) == 5
    store.delete_app("hello")
    assert store.deployments("hello") == []


def test_a_follower_gets_the_lines_live_and_stops_at_the_end(store):
    recorder = Deployments(store, 1 << 20)
    pending = recorder.create("hello", "api")
    got, times = [], []

    def follow():
        for chunk in recorder.follow(pending.id, tick=0.05):
            if chunk:
                got.append(chunk)
                times.append(time.monotonic())

    follower = threading.Thread(target=follow)
    follower.start()
    sent = {}
    with recorder.record("hello", "api", None, "building", pending.id) as run:
        for i in range(3):
            sent[i] = time.monotonic()
            run(f"step {i}")
            time.sleep(0.3)
    follower.join(5)
    assert not follower.is_alive(), "the follower did not stop when the deployment ended"
    assert "".join(got).startswith("step 0\nstep 1\nstep 2\n")
    assert times[0] - sent[0] < 0.25  # live, not at the end
    # an ended deployment: its whole log at once
    assert list(recorder.follow(pending.id)) == [store.get_deployment(pending.id).log]


# the pipeline records every entry point

class FakeEngine:
    def image_attrs(self, ref):
        return {"Config": {}}

    def tag(self, image_id, repository, tag):
        pass

    def remove_image(self, ref):
        return True


@pytest.fixture
def pipeline(store, tmp_path, monkeypatch):
    pipe = Pipeline(Settings(data_dir=tmp_path, instance="t1234567"), store, FakeEngine())
    release = store.new_release("hello", status="succeeded", image_id="sha256:abc",
                                image="gitd/hello:v1", commit="c" * 40)
    store.set_live("hello", release.version, 1)
    pipe.outcome = None

    def deploy(release, progress, **kw):
        progress.step(f"Deploying v{release.version}")
        if pipe.outcome:
            raise pipe.outcome

    monkeypatch.setattr(pipe, "_deploy", deploy)
    monkeypatch.setattr(pipe, "trim_history", lambda app, keep=None: None)
    return pipe


@pytest.mark.parametrize("call,trigger", [
    (lambda p, base: p.release("hello", base, {}, "rollback", "Rollback to v1", "admin", None),
     "rollback"),
    (lambda p, base: p.release("hello", base, {"A": "1"}, "config", "Set A", "admin", None), "config"),
    (lambda p, base: p.release("hello", base, {}, "storage", "Mount", "admin", None), "config"),
    (lambda p, base: p.redeploy("hello", None, "Scaling to web=2:"), "scale"),
    (lambda p, base: p.redeploy("hello", None, "Restarting"), "restart"),
    (lambda p, base: p.redeploy("hello", None, "Starting"), "restart"),
    (lambda p, base: p.redeploy("hello", None, "Applying resources memory=1g:"), "config"),
    (lambda p, base: p.redeploy("hello", None, "Restarting", trigger="webhook"), "webhook"),
])
def test_each_entry_point_leaves_a_row_with_its_trigger_and_log(pipeline, store, call, trigger):
    base = store.get_release("hello", 1)
    call(pipeline, base)
    row = store.deployments("hello")[0]
    assert (row.status, row.trigger) == ("succeeded", trigger)
    assert "-----> Deploying v" in row.log


def test_a_failing_entry_point_leaves_a_failed_row_and_the_caller_still_sees_lines(pipeline, store):
    pipeline.outcome = DeployError("the new container did not become healthy")
    seen = []
    with pytest.raises(DeployError):
        pipeline.release("hello", store.get_release("hello", 1), {}, "config", "Set A", "admin",
                         seen.append)
    row = store.deployments("hello")[0]
    assert row.status == "failed" and row.release == 2 and "did not become healthy" in row.error
    assert any("Deploying v2" in line for line in seen)


# refs of the app's own repository

def _commit(repo, message: bytes, parents=()) -> bytes:
    blob = Blob.from_string(message)
    tree = Tree()
    tree.add(b"f", 0o100644, blob.id)
    commit = Commit()
    commit.tree, commit.parents, commit.message = tree.id, list(parents), message
    commit.author = commit.committer = b"t <t@example.com>"
    commit.commit_time = commit.author_time = 0
    commit.commit_timezone = commit.author_timezone = 0
    for obj in (blob, tree, commit):
        repo.object_store.add_object(obj)
    return commit.id


@pytest.fixture
def repo(tmp_path):
    repo = Repo.init_bare(str(tmp_path / "hello.git"), mkdir=True)
    first = _commit(repo, b"one")
    second = _commit(repo, b"two", [first])
    repo.refs[b"refs/heads/main"] = second
    repo.refs[b"refs/heads/feature"] = first
    tag = Tag()
    tag.object, tag.name, tag.message = (Commit, first), b"v1", b"v1"
    tag.tagger, tag.tag_time, tag.tag_timezone = b"t <t@example.com>", 0, 0
    repo.object_store.add_object(tag)
    repo.refs[b"refs/tags/v1"] = tag.id
    repo.secret = _commit(repo, b"force-pushed away")  # stored, no ref reaches it
    repo.first, repo.second = first.decode(), second.decode()
    return repo


def test_refs_resolve_to_commits_of_the_app_repository(repo):
    assert verbs.resolve_ref(repo, None) == ("main", repo.second)
    assert verbs.resolve_ref(repo, "feature") == ("feature", repo.first)
    assert verbs.resolve_ref(repo, "v1") == ("v1", repo.first)  # an annotated tag, peeled
    assert verbs.resolve_ref(repo, repo.first) == (repo.first, repo.first)
    assert verbs.resolve_ref(repo, "refs/heads/main") == ("refs/heads/main", repo.second)


@pytest.mark.parametrize("ref", ["-x", "--upload-pack=sh", "../other.git", "main..feature",
                                 "a b", "refs/heads/", "x" * 300, "", "HEAD@{1}", "main\n"])
def test_hostile_refs_are_refused(repo, ref):
    with pytest.raises(UsageError):
        verbs.resolve_ref(repo, ref)


def test_an_unreachable_or_unknown_commit_or_a_missing_branch_is_not_found(repo):
    for ref in (repo.secret.decode(), "f" * 40, "nosuch", "refs/heads/nosuch"):
        with pytest.raises(NotFound):
            verbs.resolve_ref(repo, ref)


# image references

@pytest.mark.parametrize("ref", [
    "-v", "--help", "a b", "Upper/case", "x:y:z", "sha256:" + "a" * 64, "sha256:abc",
    "nginx;rm -rf /", "nginx@sha256:short", "reg.example/app:" + "t" * 200, "", "x" * 300,
    "[::1]:5000/x", "nginx\n",
])
def test_hostile_image_references_are_refused(ref):
    with pytest.raises(UsageError):
        validate.image_reference(ref)


def test_image_references_get_latest_when_untagged():
    assert validate.image_reference("127.0.0.1:5001/team/app") == "127.0.0.1:5001/team/app:latest"
    digest = "reg.example/app@sha256:" + "0" * 64
    assert validate.image_reference(digest) == digest


class FakeDaemon:
    def __init__(self, store, settings):
        self.store, self.settings = store, settings


@pytest.mark.parametrize("ref", ["gitd/other:v1", "docker.io/gitd/other:v1",
                                 "127.0.0.1:5000/gitd/other:v1", "localhost:5000/team/x:1"])
def test_gitd_own_images_and_registry_are_refused(store, tmp_path, ref):
    s = Session(FakeDaemon(store, Settings(data_dir=tmp_path, registry_port=5000)),
                store.get_key("admin"))
    with pytest.raises(PermissionDenied):
        verbs.check_image(s, ref)
    assert verbs.check_image(s, "127.0.0.1:5001/team/x:1") == "127.0.0.1:5001/team/x:1"


@pytest.mark.parametrize("ref", ["127.1:5000/x", "0x7f.1:5000/x", "127.0.0.2:5000/x:1",
                                 "LOCALHOST:5000/x", "0.0.0.0:5000/x", "2130706433:5000/x",
                                 "127.000.000.001:5000/x", "localhost:05000/x",
                                 "0177.0.0.1:5000/team/x@sha256:" + "0" * 64])
def test_gitd_own_registry_in_any_spelling_is_refused(store, tmp_path, ref):
    """Only 127.0.0.1, localhost, [::1] and 0.0.0.0 were known spellings of
    this host: 127.1:5000/x pulled from gitd's own registry."""
    s = Session(FakeDaemon(store, Settings(data_dir=tmp_path, registry_port=5000)),
                store.get_key("admin"))
    with pytest.raises(PermissionDenied, match="own registry"):
        verbs.check_image(s, ref)


@pytest.mark.parametrize("ref", ["nginx:1", "team/x", "127.0.0.1:5001/x:1", "127.1:5001/x:1",
                                 "198.51.100.7:5000/x:1", "198.51.100.7/x:1"])
def test_other_registries_and_ports_are_allowed(store, tmp_path, ref):
    s = Session(FakeDaemon(store, Settings(data_dir=tmp_path, registry_port=5000)),
                store.get_key("admin"))
    assert verbs.check_image(s, ref).startswith(ref)


def test_a_registry_gitd_is_pointed_at_is_its_own_in_any_spelling(store, tmp_path):
    s = Session(FakeDaemon(store, Settings(data_dir=tmp_path, registry="127.0.0.1:6000")),
                store.get_key("admin"))
    for ref in ("127.0.0.1:6000/x", "127.1:6000/x", "localhost:6000/x"):
        with pytest.raises(PermissionDenied):
            verbs.check_image(s, ref)
    assert verbs.check_image(s, "127.0.0.1:5000/x") == "127.0.0.1:5000/x:latest"


class PullStream:
    """The engine's pull progress: the events given, noting when it is hung up."""

    def __init__(self, events):
        self.events, self.closed, self.read = events, False, 0

    def __iter__(self):
        for event in self.events:
            if self.closed:
                return
            self.read += 1
            yield event

    def close(self):
        self.closed = True


class PullingClient:
    def __init__(self, events):
        self.stream = PullStream(events)
        self.api = self
        self.images = self

    def pull(self, repository, tag, stream, decode):
        return self.stream

    def get(self, ref):
        return type("Image", (), {"id": "sha256:pulled"})


def layer(name, total, current=0):
    return {"status": "Downloading", "id": name,
            "progressDetail": {"current": current, "total": total}}


def test_a_pull_past_max_image_bytes_stops_and_says_so():
    """A pull had no size bound: an image of any size filled the disk."""
    from hooks.engine import Engine
    events = [{"status": "Pulling from x"}, layer("a", 600), layer("a", 600, 300),
              layer("b", 500), layer("b", 500, 100)] + [layer("b", 500, 200)] * 50
    client = PullingClient(events)
    with pytest.raises(GitdError, match="larger than max_image_bytes .1000 bytes.*1100"):
        Engine(client, "x").pull("reg.example/x:1", 60, lambda line: None, max_bytes=1000)
    assert client.stream.closed and client.stream.read == 4  # hung up at once
    small = PullingClient([layer("a", 600), layer("a", 600, 600), {"status": "Downloaded"}])
    assert Engine(small, "x").pull("reg.example/x:1", 60, lambda line: None, 1000) == "sha256:pulled"


def test_an_image_that_unpacks_past_max_image_bytes_is_refused():
    from hooks.pipeline import refuse_unpacked_size
    with pytest.raises(GitdError, match="unpacks to 2000 bytes"):
        refuse_unpacked_size({"Size": 2000}, "reg.example/x:1", 1000)
    refuse_unpacked_size({"Size": 1000}, "reg.example/x:1", 1000)


def test_deployments_of_an_app_the_caller_cannot_reach_are_not_found(store, tmp_path):
    daemon = FakeDaemon(store, Settings(data_dir=tmp_path))
    daemon.deployments = Deployments(store, 1024)
    theirs = store.new_deployment("other", "push")
    mine = store.new_deployment("hello", "push")
    dev = Session(daemon, store.get_key("dev"))
    assert verbs.get(dev, mine.id)["app"] == "hello"
    with pytest.raises(NotFound):
        verbs.get(dev, theirs.id)
    with pytest.raises(NotFound):
        verbs.log_so_far(dev, theirs.id)
    with pytest.raises(PermissionDenied):
        verbs.list_for_app(dev, "other")
    with pytest.raises(PermissionDenied):  # an image deploy is an admin's
        verbs.create(dev, "hello", image="127.0.0.1:5001/x:1")
    assert [d["id"] for d in verbs.list_for_app(dev, "hello")] == [mine.id]


def test_a_flood_of_created_deployments_is_refused_past_the_queue(store, tmp_path, monkeypatch):
    daemon = FakeDaemon(store, Settings(data_dir=tmp_path, registry_port=5000))
    daemon.deployments = Deployments(store, 1024)
    for _ in range(verbs.MAX_WAITING):
        daemon.deployments.create("hello", "api")
    admin = Session(daemon, store.get_key("admin"))
    with pytest.raises(Conflict, match="already waiting"):
        verbs.create(admin, "hello", image="127.0.0.1:5001/x:1")
    assert len(store.deployments("hello")) == verbs.MAX_WAITING


def test_deployments_created_at_once_cannot_all_pass_the_queue_limit(store, tmp_path,
                                                                     monkeypatch):
    """Two requests at once both counted the queue before either had added to
    it: each passed, and the app got more waiting deployments than the limit."""
    daemon = FakeDaemon(store, Settings(data_dir=tmp_path, registry_port=5000))
    daemon.deployments = Deployments(store, 1024)
    monkeypatch.setattr(verbs, "threading", NotStarted)  # they stay pending
    writing = store.new_deployment

    def slow_write(*args, **kwargs):
        time.sleep(0.05)  # the window between the count and the new row, widened
        return writing(*args, **kwargs)

    monkeypatch.setattr(store, "new_deployment", slow_write)
    admin = Session(daemon, store.get_key("admin"))
    start, answers = threading.Barrier(12), []

    def create():
        start.wait()
        try:
            answers.append(verbs.create(admin, "hello", image="127.0.0.1:5001/x:1")["status"])
        except Conflict as exc:
            answers.append(str(exc))

    threads = [threading.Thread(target=create) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers.count("pending") == verbs.MAX_WAITING
    assert len(store.deployments("hello")) == daemon.deployments.waiting("hello") == verbs.MAX_WAITING
    assert all("already waiting" in a for a in answers if a != "pending")


class NotStarted:
    """As the verbs' `threading`: threads made, never started."""

    class Thread:
        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            pass


@pytest.mark.parametrize("deployment_id", [0, -1, 2**63, 10**30])
def test_an_id_no_deployment_can_have_is_not_found(store, deployment_id):
    """`deployments:info 99999999999999999999999` over SSH: past sqlite's
    integers it was an internal error."""
    with pytest.raises(NotFound):
        store.get_deployment(deployment_id)


def test_a_registry_name_on_gitd_registry_port_that_does_not_resolve_is_refused(store, tmp_path):
    s = Session(FakeDaemon(store, Settings(data_dir=tmp_path, registry_port=5000)),
                store.get_key("admin"))
    with pytest.raises(GitdError, match="does not resolve"):
        verbs.check_image(s, "no-such-host.invalid:5000/x")
