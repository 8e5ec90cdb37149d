"""Redis: the official image's interface (data in /data), dumps as RDB files
from `redis-cli --rdb -`; a restore is checked with redis-check-rdb before the
server is stopped and the file put in place."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from gitd.core.errors import GitdError
from gitd.services.base import Kind


@dataclass(frozen=True)
class Redis(Kind):
    name: str = "redis"
    default_image: str = "redis:{version}-alpine"
    default_version: str = "7"
    port: int = 6379
    data_path: str = "/data"
    env_prefix: str = "REDIS"
    dump_suffix: str = ".rdb"

    def command(self, svc):
        return ["redis-server", "--requirepass", svc.password, "--dir", self.data_path,
                "--dbfilename", "dump.rdb", "--save", "60", "1", "--appendonly", "no",
                "--protected-mode", "no"]

    def exec_env(self, svc):
        return {"REDISCLI_AUTH": svc.password}

    def health_argv(self, svc):
        # the healthcheck has no exec env: the password goes through the shell's env
        return ["sh", "-c", f"REDISCLI_AUTH='{svc.password}' redis-cli ping | grep -q PONG"]

    def version_argv(self, svc):
        return ["redis-cli", "INFO", "server"]

    def parse_version(self, output):
        match = re.search(r"^redis_version:([0-9]+(?:\.[0-9]+)*)", output, re.MULTILINE)
        return match.group(1) if match else None

    def url(self, svc, host):
        return f"redis://default:{svc.password}@{host}:{self.port}/0"

    def client_argv(self, svc, host):
        return ["redis-cli", "-h", host, "-p", str(self.port)]

    def dump_argv(self, svc):
        return ["redis-cli", "--rdb", "-"]

    def restore(self, engine, container, svc, chunks, emit, restart=None):
        staged = f"{self.data_path}/restore-{secrets.token_hex(3)}.rdb"
        env = self.exec_env(svc)
        status, output = engine.exec(container, ["sh", "-c", f"cat > {staged}"], stdin=chunks)
        if status != 0:
            raise GitdError(f"cannot stage the dump: {output.decode('utf-8', 'replace')[-300:]}")
        status, output = engine.exec(container, ["redis-check-rdb", staged])
        if status != 0:
            engine.exec(container, ["rm", "-f", staged])
            text = output.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise GitdError(f"the dump was refused (redis-check-rdb: {' '.join(text)}); "
                            f"{svc.name} is untouched")
        emit("dump checked; loading it")
        # the live file is replaced while the server cannot write over it:
        # no more saves, swap in the staged file, stop without saving, start
        self._cli(engine, container, svc, ["CONFIG", "SET", "save", ""])
        status, output = engine.exec(container, ["mv", staged, f"{self.data_path}/dump.rdb"])
        if status != 0:
            self._cli(engine, container, svc, ["CONFIG", "SET", "save", "60 1"])
            engine.exec(container, ["rm", "-f", staged])
            why = output.decode("utf-8", "replace")[-300:]
            raise GitdError(f"cannot put the dump in place ({why}); {svc.name} is untouched")
        engine.exec(container, ["redis-cli", "SHUTDOWN", "NOSAVE"], environment=env)
        (restart or engine.start)(container)

    def _cli(self, engine, container, svc, words: list[str]) -> None:
        status, output = engine.exec(container, ["redis-cli", *words],
                                     environment=self.exec_env(svc))
        text = output.decode("utf-8", "replace").strip()
        if status != 0 or text.startswith(("ERR", "NOAUTH", "WRONGPASS")):
            raise GitdError(f"redis-cli {words[0]} failed: {text[-300:]}")
