"""asyncssh's channel receive window, made to bound what a channel holds.

A channel whose reader paused (the session's stream holds a window's worth)
queues what the client sends; each packet it later hands on refills the
client's window to the whole initial size, crediting the packets still
queued as if they had been read. A client that sends faster than gitd
consumes (a push, whose pack gitd hashes and writes) is then never held back:
the queue grew to the whole push (230 MB of a 256 MB push, by tracemalloc).
Here a refill credits only what left the queue, so queue + window stay under
the initial window.
"""

from __future__ import annotations

from asyncssh.channel import SSHChannel


def credit_only_delivered_data() -> None:
    original = SSHChannel._deliver_data
    if getattr(original, "credits_only_delivered", False):
        return

    def deliver_data(self, data, datatype):
        full = self._init_recv_window
        queued = sum(len(chunk) for chunk, _ in self._recv_buf)
        self._init_recv_window = max(full - queued, 0)  # what a refill may grant
        try:
            original(self, data, datatype)
        finally:
            self._init_recv_window = full

    deliver_data.credits_only_delivered = True
    SSHChannel._deliver_data = deliver_data
