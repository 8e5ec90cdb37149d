"""Blocking reads and writes from a worker thread onto an asyncssh process."""

from __future__ import annotations

import asyncio
import concurrent.futures

from gitd.core.errors import GitdError


class ChannelClosed(Exception):
    pass


class IdleTimeout(GitdError):
    def __init__(self, seconds: float):
        super().__init__(f"nothing received for {seconds:g}s: session closed "
                         "(setting idle_timeout)")


class ThreadBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop, process):
        self.loop = loop
        self.process = process
        self._pending = None
        # with a value, a read given no timeout of its own that waits this
        # long raises IdleTimeout (a git client or stdin that stopped sending)
        self.idle_timeout: float | None = None

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def recv(self, size: int, timeout: float | None = None) -> bytes:
        """Up to `size` bytes of stdin; b"" at end of input. With `timeout`,
        TimeoutError when nothing came yet. A pty's window change arrives as
        asyncssh.TerminalSizeChanged."""
        idle = timeout is None and self.idle_timeout is not None
        if idle:
            timeout = self.idle_timeout
        if self._pending is None:
            # a read that timed out stays pending (cancelling it could drop
            # data it had just taken) and the next call picks up its result
            self._pending = asyncio.run_coroutine_threadsafe(self.process.stdin.read(size),
                                                             self.loop)
        try:
            data = self._pending.result(timeout)
        except concurrent.futures.TimeoutError:
            if idle:
                raise IdleTimeout(timeout) from None
            raise TimeoutError() from None
        except BaseException:
            self._pending = None
            raise
        self._pending = None
        return data

    def buffered(self, limit: int = 256 * 1024) -> "BufferedOutput":
        """A writer that crosses to the event loop once per `limit` bytes
        instead of once per write (upload-pack writes a pkt-line per 64 KiB
        or less). Flushed before every read, so a request/response exchange
        never waits on data still held here."""
        return BufferedOutput(self, limit)

    def terminal_size(self) -> tuple[int, int]:
        """(columns, rows) of the client's pty; (0, 0) without one."""
        width, height, _, _ = self.process.get_terminal_size()
        return width, height

    def read_all(self, limit: int = 1024 * 1024) -> bytes:
        chunks, total = [], 0
        while total <= limit:
            chunk = self.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        self._run(self._write(self.process.stdout, data))

    def write_err(self, data: bytes) -> None:
        self._run(self._write(self.process.stderr, data))

    async def _write(self, stream, data: bytes) -> None:
        if self.process.channel.is_closing():
            raise ChannelClosed()
        stream.write(data)
        await stream.drain()

    def out(self, text: str) -> None:
        self.write(text.encode())

    def err(self, text: str) -> None:
        self.write_err(text.encode())

    def closed(self) -> bool:
        return self.process.channel.is_closing()


class BufferedOutput:
    def __init__(self, bridge: ThreadBridge, limit: int):
        self.bridge = bridge
        self.limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._chunks.append(bytes(data))
        self._size += len(data)
        if self._size >= self.limit:
            self.flush()

    def flush(self) -> None:
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks, self._size = [], 0
            self.bridge.write(data)

    def recv(self, size: int, timeout: float | None = None) -> bytes:
        self.flush()
        return self.bridge.recv(size, timeout)
