"""The API's listener against clients that hold connections: headers sent
slowly, connections opened and left, bodies that never end. Raw sockets
against the real listener (ApiServer on 127.0.0.1, port 0)."""

import asyncio
import time

from gitd.api import ApiServer
from gitd.core.config import Settings
from gitd.verbs import Session, tokens
from tests.fakes import StoreGitd


def serving(store, tmp_path, test, **settings):
    """Run `test(port)` (a coroutine function) against a started ApiServer."""
    async def run():
        server = ApiServer(StoreGitd(store, Settings(data_dir=tmp_path, traefik="external",
                                                     **settings)))
        port = await server.start("127.0.0.1", 0)
        try:
            return await test(port)
        finally:
            await server.stop()
    return asyncio.run(run())


async def closed_after(reader, limit: float) -> float | None:
    """Seconds until the server closes the connection, None if not within `limit`."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return None
    return time.monotonic() - started


async def health(port) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return answer


def test_headers_sent_slowly_are_cut_off_at_the_header_timeout(store, tmp_path):
    """aiohttp reads headers without a time limit of its own: a client sending
    a byte a second kept its connection for 75 s (keep-alive's default)."""
    async def test(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\n")

        async def trickle():
            for _ in range(30):
                await asyncio.sleep(0.2)
                writer.write(b"X-Slow: 1\r\n")

        dripping = asyncio.create_task(trickle())
        took = await closed_after(reader, 5)
        dripping.cancel()
        writer.close()
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        silent_took = await closed_after(silent_reader, 5)  # opened and nothing sent
        silent.close()
        return took, silent_took, await health(port)

    took, silent_took, answer = serving(store, tmp_path, test, api_header_timeout=1.0)
    assert took is not None and took < 3, took
    assert silent_took is not None and silent_took < 3, silent_took
    assert answer.startswith(b"HTTP/1.1 200")  # the API itself goes on answering


def test_connections_past_the_limit_are_refused_until_one_closes(store, tmp_path):
    async def test(port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await asyncio.sleep(0.1)
        refused = await health(port)
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
        return refused, await health(port)

    refused, answer = serving(store, tmp_path, test, api_max_connections=3,
                              api_header_timeout=30.0)
    assert refused.startswith(b"HTTP/1.1 503") and b"too many connections" in refused
    assert answer.startswith(b"HTTP/1.1 200")


def test_a_body_that_never_ends_is_answered_at_the_timeout(store, tmp_path):
    token = tokens.create(Session(StoreGitd(store), store.get_key("admin")))["token"]

    async def test(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/v1/apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + token.encode() + b"\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        started = time.monotonic()
        async with asyncio.timeout(5):
            answer = await reader.read(4096)
        writer.close()
        return answer, time.monotonic() - started

    answer, took = serving(store, tmp_path, test, api_header_timeout=1.0)
    assert answer.startswith(b"HTTP/1.1 400") and b"did not arrive within 1 s" in answer, answer
    assert took < 3
    assert [a.name for a in store.list_apps()] == ["hello"]  # nothing made
