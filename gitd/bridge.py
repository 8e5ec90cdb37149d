"""Blocking reads and writes from a worker thread onto an asyncssh process."""

from __future__ import annotations

import asyncio


class ChannelClosed(Exception):
    pass


class ThreadBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop, process):
        self.loop = loop
        self.process = process

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes of stdin; b"" at end of input."""
        return self._run(self.process.stdin.read(size))

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
