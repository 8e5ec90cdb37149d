"""The run verb called directly: what it decides (access, release, image,
spec), the task it hands over and always removes, and bad input refused
before anything is made."""

import pytest

from gitd.core.errors import GitdError, NotFound, PermissionDenied, UsageError
from gitd.verbs import Session
from gitd.verbs import run as run_verbs
from tests.fakes import FakeGitd, deployed


class Task:
    def __init__(self, spec, fail_start=None):
        self.spec, self.removed, self.fail_start, self.started = spec, False, fail_start, None

    def start(self, width, height):
        if self.fail_start:
            raise GitdError(self.fail_start)
        self.started = (width, height)

    def remove(self):
        self.removed = True


class Scheduler:
    def __init__(self):
        self.tasks, self.networks = [], []

    def prepare(self, network, app):
        self.networks.append(network)

    def oneoff(self, spec, abandoned=None):
        self.tasks.append(Task(spec))
        return self.tasks[-1]


class Engine:
    labels: dict = {}

    def image_attrs(self, image_id):
        return {"Config": {"Labels": self.labels}}


class Gitd(FakeGitd):
    def __init__(self, db, settings):
        super().__init__(db, settings)
        self.scheduler, self._engine = Scheduler(), Engine()
        self.pipeline.service_networks = lambda app: []

    @property
    def engine(self):
        return self._engine


@pytest.fixture
def gitd(fake):  # noqa: F811 - the fixture imported above
    return Gitd(fake.store, fake.settings)


def session(gitd, key="admin"):
    return Session(gitd, gitd.store.get_key(key))


def test_the_task_runs_the_current_release_and_is_removed_after(gitd):
    deployed(gitd.store, config={"A": "1"})
    with run_verbs.oneoff(session(gitd), "hello", ["env"], tty=True) as task:
        assert task.spec["command"] == ["env"] and task.spec["tty"] is True
        assert task.spec["environment"]["A"] == "1" and task.spec["labels"]["gitd.role"] == "oneoff"
        assert task.spec["image"] == "sha256:abc" and not task.removed
        run_verbs.start(task, 80, 24)
        assert task.started == (80, 24)
    assert task.removed


def test_the_task_is_removed_when_the_front_end_fails(gitd):
    deployed(gitd.store)
    with pytest.raises(RuntimeError):
        with run_verbs.oneoff(session(gitd), "hello", ["env"]):
            raise RuntimeError("the channel broke")
    assert gitd.scheduler.tasks[0].removed


@pytest.mark.parametrize("message,status", [("exec: \"nope\": executable file not found", 127),
                                            ("permission denied", 126)])
def test_a_command_that_cannot_start_exits_as_a_shell_says(message, status):
    task = Task({}, fail_start=message)
    with pytest.raises(GitdError) as exc:
        run_verbs.start(task)
    assert exc.value.exit_status == status


@pytest.mark.parametrize("argv,kwargs,error", [
    ([], {}, UsageError), (["a\0b"], {}, UsageError), ([3], {}, UsageError), ("env", {}, UsageError),
    (["x" * 200_000], {}, UsageError), (["env"], {"service": "../x"}, UsageError),
    (["env"], {"service": "api"}, UsageError),
])
def test_bad_input_is_refused_before_anything_is_made(gitd, argv, kwargs, error):
    deployed(gitd.store)
    with pytest.raises(error):
        with run_verbs.oneoff(session(gitd), "hello", argv, **kwargs):
            pass
    assert gitd.scheduler.tasks == [] and gitd.scheduler.networks == []


def test_run_is_for_admins_and_needs_a_release(gitd):
    deployed(gitd.store)
    gitd.store.grant("hello", "dev")
    with pytest.raises(PermissionDenied):
        with run_verbs.oneoff(session(gitd, "dev"), "hello", ["env"]):
            pass
    gitd.store.create_app("empty")
    with pytest.raises(GitdError, match="no release yet"):
        with run_verbs.oneoff(session(gitd), "empty", ["env"]):
            pass
    with pytest.raises(NotFound):
        with run_verbs.oneoff(session(gitd), "nope", ["env"]):
            pass
    assert gitd.scheduler.tasks == []


def test_an_image_carrying_traefik_labels_is_refused(gitd):
    deployed(gitd.store)
    gitd.engine.labels = {"traefik.http.routers.x.rule": "Host(`bank.example.com`)"}
    with pytest.raises(GitdError, match="Traefik labels"):
        with run_verbs.oneoff(session(gitd), "hello", ["env"]):
            pass
    assert gitd.scheduler.tasks == []
