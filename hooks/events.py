"""The single progress channel of a pipeline run.

Every line goes to the pusher (or admin) live through `sink`, to structlog
with app/release/stage bound, and into the release's log.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

import structlog


class Progress:
    def __init__(self, sink: Callable[[str], None] | None, app: str,
                 max_bytes: int = 1024**2, **context):
        self._sink = sink
        # Only the tail is kept (in memory and in the release row): a build
        # printing without end must not grow gitd without end.
        self._lines: deque[str] = deque()
        self._bytes = 0
        self._dropped = 0
        self.max_bytes = max_bytes
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
            self._keep(text)
        self.log.info("output", line=text.strip())
        if self._sink:
            try:
                self._sink(text)
            except Exception:  # the client hung up; the work goes on
                self._sink = None

    def _keep(self, text: str) -> None:
        text = text[-self.max_bytes:]
        self._lines.append(text)
        self._bytes += len(text) + 1
        while self._bytes > self.max_bytes and len(self._lines) > 1:
            dropped = self._lines.popleft()
            self._bytes -= len(dropped) + 1
            self._dropped += len(dropped) + 1

    @property
    def text(self) -> str:
        with self._mutex:
            head = ""
            if self._dropped:
                head = (f"[{self._dropped} bytes of earlier output dropped: the log keeps "
                        f"its last {self.max_bytes} (max_log_bytes)]\n")
            return head + "\n".join(self._lines) + ("\n" if self._lines else "")
