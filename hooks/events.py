"""The single progress channel of a pipeline run.

Every line goes to the pusher (or admin) live through `sink`, to structlog
with app/release/stage bound, and into the release's log.
"""

from __future__ import annotations

import threading
from typing import Callable

import structlog


class Progress:
    def __init__(self, sink: Callable[[str], None] | None, app: str, **context):
        self._sink = sink
        self._lines: list[str] = []
        self._mutex = threading.Lock()
        self.log = structlog.get_logger("gitd.pipeline").bind(app=app, stage="start", **context)

    def bind(self, **context) -> None:
        self.log = self.log.bind(**context)

    def stage(self, name: str) -> None:
        self.log = self.log.bind(stage=name)

    def step(self, text: str) -> None:
        """A Heroku-style header: `-----> Building with Dockerfile`."""
        self._emit(f"-----> {text}")

    def line(self, text: str) -> None:
        """Either an already-indented line or plain text, which gets indented."""
        already = text.startswith(("       ", "-----> ", " !     "))
        self._emit(text if already else f"       {text}")

    def warn(self, text: str) -> None:
        self._emit(f" !     {text}")

    __call__ = line

    def _emit(self, text: str) -> None:
        with self._mutex:
            self._lines.append(text)
        self.log.info("output", line=text.strip())
        if self._sink:
            try:
                self._sink(text)
            except Exception:  # the client hung up; the work goes on
                self._sink = None

    @property
    def text(self) -> str:
        with self._mutex:
            return "\n".join(self._lines) + ("\n" if self._lines else "")
