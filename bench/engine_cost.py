"""What one container start costs the engine as containers accumulate, with
and without Traefik's docker provider watching it (issue #21: a push at 300
apps took 2.8x its time at 1 app, and a `docker run` by hand 3.5x).

At 0 and then at N busybox containers (each on a network of its own,
publishing a port on 127.0.0.1 and carrying Traefik labels and a Docker
health check, as gitd's web containers do), it starts one more such
container (on a network of its own, made beforehand: gitd makes an app's
network once) until its port answers, then removes it, `--rounds` times
with a Traefik (docker provider) running and as often without,
alternating; and it reads dockerd's CPU time over each start and the second
after it (when Traefik lists and inspects every container). gitd's managed
Traefik runs no docker provider (hooks.docker_routes): "without" is gitd's
case, "with" an external Traefik's (and gitd's before).

    python bench/engine_cost.py [--containers 300] [--rounds 8]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import BASE_IMAGE, build_base_image, free_port  # noqa: I001 - first: puts the repo on sys.path

import docker
import docker.types

LABEL = "gitd.bench"
# one small subnet per network, named (Docker's default pools hold ~30 networks)
SUBNETS = list(ipaddress.ip_network("10.251.0.0/16").subnets(new_prefix=28))


def dockerd_cpu_seconds() -> float:
    pid = subprocess.run(["pgrep", "-o", "dockerd"], capture_output=True, text=True).stdout.split()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Engine:
    def __init__(self, client, mark: str):
        self.client, self.mark = client, mark

    def network(self, n: int):
        ipam = docker.types.IPAMConfig(pool_configs=[
            docker.types.IPAMPool(subnet=str(SUBNETS[n % len(SUBNETS)]))])
        return self.client.networks.create(f"{self.mark}-{n}", driver="bridge", ipam=ipam,
                                           labels={LABEL: self.mark})

    def start(self, n: int, network=None):
        labels = {LABEL: self.mark, "traefik.enable": "true",
                  f"traefik.http.routers.b{n}.rule": f"Host(`b{n}.test`)",
                  f"traefik.http.services.b{n}.loadbalancer.server.port": "5000"}
        return self.client.containers.run(
            BASE_IMAGE, ["httpd", "-f", "-p", "5000"], detach=True, labels=labels,
            ports={"5000/tcp": ("127.0.0.1", None)},
            network=(network or self.network(n)).name,
            healthcheck={"test": ["CMD", "true"], "interval": 30_000_000_000})

    def start_until_it_answers(self, n: int) -> float:
        network = self.network(n)
        began = time.monotonic()
        container = self.start(n, network)
        try:
            container.reload()
            port = int(container.attrs["NetworkSettings"]["Ports"]["5000/tcp"][0]["HostPort"])
            answers(port, began + 30)
            return time.monotonic() - began
        finally:
            container.remove(force=True)
            network.remove()

    def remove_all(self) -> None:
        for container in self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.mark}"}):
            container.remove(force=True)
        for network in self.client.networks.list(filters={"label": f"{LABEL}={self.mark}"}):
            network.remove()


def answers(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if conn.recv(12):
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"nothing answered on port {port}")


def traefik(root: Path) -> subprocess.Popen:
    config = root / "traefik.yml"
    config.write_text(f"entryPoints:\n  web:\n    address: \"127.0.0.1:{free_port()}\"\n"
                      "providers:\n  providersThrottleDuration: 50ms\n"
                      "  docker:\n    exposedByDefault: false\n    useBindPortIP: true\n"
                      "log:\n  level: ERROR\n")
    return subprocess.Popen([shutil.which("traefik"), f"--configFile={config}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(engine: Engine, root: Path, rounds: int, settle: float) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {k: [] for k in ("with", "without", "with cpu", "without cpu")}
    for n in range(rounds):
        for side in ("without", "with"):
            proc = traefik(root) if side == "with" else None
            try:
                time.sleep(settle)  # Traefik's first listing and inspection of them all is done
                before = dockerd_cpu_seconds()
                figures[side].append(engine.start_until_it_answers(10_000 + n))
                time.sleep(1.0)
                figures[f"{side} cpu"].append(dockerd_cpu_seconds() - before)
            finally:
                if proc:
                    proc.terminate()
                    proc.wait()
    return figures


def report(label: str, figures: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in figures.items()}
    print(f"| {label} | {med['with']:.3f} s | {med['without']:.3f} s | {med['with'] / med['without']:.2f} "
          f"| {med['with cpu']:.2f} s | {med['without cpu']:.2f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    count, rounds = max(1, min(args.containers, 1000)), max(1, min(args.rounds, 50))
    client = docker.from_env(timeout=300)
    build_base_image(client)
    engine = Engine(client, f"engine-{uuid.uuid4().hex[:8]}")
    print(f"medians of {rounds} starts each, Traefik's docker provider running or not, alternating\n")
    print("| containers | start until it answers, with | without | ratio | dockerd CPU per start, with | without |")
    print("|---|---|---|---|---|---|")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report("0", measure(engine, Path(tmp), rounds, 1.5))
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(engine.start, range(count)))
            time.sleep(10)  # their start events handled
            report(str(count), measure(engine, Path(tmp), rounds, 1.5 + count / 50))
    finally:
        engine.remove_all()


if __name__ == "__main__":
    main()
