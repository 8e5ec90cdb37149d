"""ps rows: the phase of each process, and Docker's restarts and exit status."""

from gitd.commands.ps import _note
from hooks import dynos
from hooks.scheduler import ExitWatch
from tests.fakes import Container

LABELS = {"gitd.process": "worker", "gitd.role": "service", "gitd.release": "2", "gitd.seq": "5"}


def test_restarts_and_the_last_exit_status():
    running = Container("gitd-i.shop.worker.1.s5", LABELS, "running", {
        "RestartCount": 4, "State": {"StartedAt": "2026-01-01T00:00:10Z", "ExitCode": 0,
                                     "FinishedAt": "2026-01-01T00:00:09Z"}})
    row = dynos.container_row(running, last_exit=3)
    assert (row["restarts"], row["exit_code"]) == (4, 3)
    stopped = Container("gitd-i.shop.worker.1.s5", LABELS, "exited", {
        "State": {"ExitCode": 137, "FinishedAt": "2026-01-01T00:00:09Z"}})
    assert (dynos.container_row(stopped)["restarts"], dynos.container_row(stopped)["exit_code"]) \
        == (0, 137)
    fresh = Container("gitd-i.shop.worker.1.s5", LABELS, "created", {
        "State": {"ExitCode": 0, "FinishedAt": "0001-01-01T00:00:00Z"}})
    assert dynos.container_row(fresh)["exit_code"] is None  # never ran to an end


def test_phases_of_a_deploy():
    def row(seq, role="service"):
        return {"seq": seq, "role": role}
    assert [dynos.phase(row(s), 5) for s in (4, 5, 6)] == ["retiring", "live", "deploying"]
    assert dynos.phase(row(1), None) == "deploying"  # the first deploy, not live yet
    assert dynos.phase(row(5, "oneoff"), 5) is None


def test_the_note_of_a_row():
    base = {"role": "service", "phase": "live", "restarts": 0, "exit_code": None}
    assert _note(base) == ""
    assert _note({**base, "phase": "retiring"}) == "(retiring)"
    assert _note({**base, "restarts": 12, "exit_code": 3}) == "(12 restarts, last exit 3)"
    assert _note({**base, "role": "oneoff", "phase": None, "restarts": 1}) == "(oneoff, 1 restart)"
    assert _note({"role": "service", "restarts": None, "exit_code": None}) == ""  # the swarm's


def test_exits_are_remembered_per_container_and_bounded():
    watch = ExitWatch(engine=None)
    watch.KEEP = 2
    for cid, status in (("a", "3"), ("b", "0"), ("a", "137"), ("c", "1"), ("d", "x")):
        watch._record({"id": cid, "Actor": {"Attributes": {"exitCode": status}}})
    assert (watch.last("a"), watch.last("b"), watch.last("c"), watch.last("d")) == (
        137, None, 1, None)
