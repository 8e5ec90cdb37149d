import structlog
from structlog.testing import capture_logs

from hooks.events import Progress


def test_every_line_reaches_the_sink_the_log_and_the_release_log():
    seen = []
    progress = Progress(seen.append, "hello", release="v3")
    with capture_logs() as logs:
        progress.stage("build")
        progress.step("Building with Dockerfile")
        progress.line("Step 1/2 : FROM scratch")
        progress.stage("deploy")
        progress.warn("check failed")
    assert seen == ["-----> Building with Dockerfile", "       Step 1/2 : FROM scratch",
                    " !     check failed"]
    assert progress.text == "\n".join(seen) + "\n"
    assert [(e["app"], e["release"], e["stage"]) for e in logs] == [
        ("hello", "v3", "build"), ("hello", "v3", "build"), ("hello", "v3", "deploy")]


def test_a_client_that_hung_up_does_not_stop_the_work():
    def gone(_):
        raise BrokenPipeError()

    progress = Progress(gone, "hello")
    progress.line("one")
    progress.line("two")
    assert progress.text == "       one\n       two\n"


def test_json_lines_off_a_tty(capsys):
    import io

    from gitd.core.log import configure

    stream = io.StringIO()
    configure("auto", stream=stream)
    try:
        structlog.get_logger("t").bind(app="a", release="v1", stage="build").info("output", line="x")
    finally:
        structlog.reset_defaults()
    import json
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert (record["app"], record["release"], record["stage"], record["event"]) == ("a", "v1", "build", "output")
