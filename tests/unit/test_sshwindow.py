"""asyncssh's channel window, as gitd uses it: a reader slower than the
client holds back the client, so a push is never queued whole in memory."""

from __future__ import annotations

from asyncssh.channel import SSHChannel

from gitd import sshwindow

WINDOW = 2 * 1024 * 1024
PACKET = 32 * 1024
DATA = b"x" * PACKET  # one object, sent again and again


class _Log:
    def debug2(self, *_args):
        pass


class _Channel(SSHChannel):
    """The channel's own receive path, without a connection: a client that
    sends whenever the window lets it, a stream that pauses at every packet."""

    logger = _Log()

    def __init__(self):  # the fields the receive path reads
        self._init_recv_window = self._recv_window = WINDOW
        self._recv_buf = []
        self._recv_paused = False
        self._recv_state = self._send_state = "open"
        self._encoding = None
        self._session = self
        self.delivered = 0

    def send_packet(self, *_args, **_kwargs):
        pass  # a window adjust: the client sees it in _recv_window

    def data_received(self, data, _datatype):
        self.delivered += len(data)
        self._recv_paused = True  # the stream holds a window's worth

    def client_sends_what_it_may(self):
        while self._recv_window >= PACKET:
            self._accept_data(DATA)

    def queued(self) -> int:
        return sum(len(chunk) for chunk, _ in self._recv_buf)


def test_a_paused_channel_queues_no_more_than_its_window_however_much_is_sent():
    sshwindow.credit_only_delivered_data()
    channel = _Channel()
    most = 0
    for _ in range(500):  # 500 reads of a packet each
        channel.client_sends_what_it_may()
        most = max(most, channel.queued())
        channel.resume_reading()  # the reader took a packet
    assert channel.delivered >= 500 * PACKET  # held back, never starved
    assert most <= WINDOW, most


def test_crediting_only_delivered_data_is_applied_once():
    sshwindow.credit_only_delivered_data()
    patched = SSHChannel._deliver_data
    sshwindow.credit_only_delivered_data()
    assert SSHChannel._deliver_data is patched
