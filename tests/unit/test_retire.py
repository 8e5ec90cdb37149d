"""hooks.retire: one background retirement per app, taken over by the next."""

import threading

from hooks.retire import Retirements


def test_a_retirement_drains_then_stops_its_containers_in_the_background():
    stopped = []
    done, release = threading.Event(), threading.Event()

    def stop(containers):
        release.wait(10)  # held until checked: pending however slow the machine
        stopped.extend(containers)
        done.set()

    jobs = Retirements()
    job = jobs.start("a", ["c1", "c2"], 0.05, stop)
    assert jobs.pending() == {"a"} and not done.is_set()
    release.set()
    assert done.wait(10) and job.done.wait(10)
    assert stopped == ["c1", "c2"] and jobs.pending() == set()


def test_the_next_retirement_takes_over_one_still_draining():
    stopped = []
    jobs = Retirements()
    first = jobs.start("a", ["v1"], 60, stopped.append)
    second = jobs.start("a", ["v1", "v2"], 0, stopped.append)
    assert second.done.wait(10) and first.done.is_set()
    assert stopped == [["v1", "v2"]]  # v1 once, by the job that took it over


def test_a_takeover_waits_for_a_stop_already_begun():
    order = []
    stopping = threading.Event()
    release = threading.Event()

    def slow_stop(containers):
        stopping.set()
        release.wait(10)
        order.append(("first", containers))

    jobs = Retirements()
    jobs.start("a", ["v1"], 0, slow_stop)
    assert stopping.wait(10)
    second = jobs.start("a", ["v2"], 0, lambda cs: order.append(("second", cs)))
    assert not second.done.wait(0.2)  # the first is still stopping v1
    release.set()
    assert second.done.wait(10)
    assert order == [("first", ["v1"]), ("second", ["v2"])]


def test_apps_retire_side_by_side_and_wait_bounds_shutdown():
    jobs = Retirements()
    jobs.start("a", ["a1"], 60, lambda cs: None)
    quick = jobs.start("b", ["b1"], 0, lambda cs: None)
    assert quick.done.wait(10)
    assert jobs.pending() == {"a"}
    assert jobs.wait(0.1) is False  # what is left is handed to the next start
    jobs.cancel("a")
    assert jobs.pending() == set() and jobs.wait(1) is True


def test_a_failing_stop_ends_the_job_and_is_left_for_a_restart():
    def broken(containers):
        raise RuntimeError("docker went away")

    jobs = Retirements()
    job = jobs.start("a", ["v1"], 0, broken)
    assert job.done.wait(10) and jobs.pending() == set()
