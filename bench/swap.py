"""Steady HTTP load through Traefik across 10 deploys: gitd's gated swap
beside a plain "stop old, start new" redeploy, measured in the same run.

    python bench/swap.py [--deploys 10] [--https] [--scheduler swarm]

With --https the load goes over HTTPS (SNI = the app's host, verified
against a test CA whose certificate the app gets with certs:add), and the
naive baseline carries a TLS router too. With --scheduler swarm gitd runs
the app as swarm services on a one-node swarm (made for the run if this
engine is not in one); the baseline stays the same containers by hand.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from common import BASE_IMAGE, HttpLoad, bench_gitd  # noqa: I001

from tests.e2e.harness import commit, make_repo, unique_app
from tests.e2e.tls_helpers import MiniCA


def app_files(version: str) -> dict:
    return {"Dockerfile": (
        f"FROM {BASE_IMAGE}\n"
        "RUN mkdir -p /www\n"
        f"COPY index.html /www/index.html\n"
        'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n'),
        "index.html": f"{version}\n"}


def load_for(gitd, app: str, ca: MiniCA | None, verify: bool = True) -> HttpLoad:
    if ca is None:
        return HttpLoad(gitd.http_port, gitd.host(app))
    context = ssl.create_default_context(cadata=ca.pem)
    if not verify:  # the naive baseline has no certificate of its own
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return HttpLoad(gitd.https_port, gitd.host(app), tls=context)


def install_cert(gitd, app: str, ca: MiniCA | None) -> None:
    if ca is not None:
        added = gitd.ssh("certs:add", app, input=ca.bundle([gitd.host(app)]))
        if added.returncode != 0 or "Traefik serves it" not in added.stdout:
            raise SystemExit(added.stdout + added.stderr)


def gitd_deploys(gitd, tmp: Path, deploys: int, ca: MiniCA | None = None) -> tuple[dict, list[float]]:
    app = unique_app("bench")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp / app, app_files("v0"))
    assert gitd.push(repo, app).returncode == 0
    install_cert(gitd, app, ca)  # returns once Traefik serves it
    times = []
    with load_for(gitd, app, ca) as load:
        time.sleep(2)
        for n in range(1, deploys + 1):
            commit(repo, app_files(f"v{n}"), f"v{n}")
            started = time.monotonic()
            pushed = gitd.push(repo, app)
            times.append(time.monotonic() - started)
            if pushed.returncode != 0:
                raise SystemExit(pushed.stderr)
        time.sleep(2)
    gitd.ssh("apps:destroy", app, "--force")
    return load.summary(), times


def naive_deploys(gitd, client, tmp: Path, deploys: int,
                  ca: MiniCA | None = None) -> tuple[dict, list[float]]:
    """The same image run by hand: identical Traefik labels, no health gate;
    each redeploy stops the old container, then starts the new one."""
    app = unique_app("naive")
    image, _ = client.images.build(path=str(make_repo(tmp / app, app_files("naive"))),
                                   tag=f"gitd-bench/{app}:latest", rm=True)
    labels = {
        "gitd.instance": gitd.instance, "gitd.bench": "naive",
        "traefik.enable": "true",
        f"traefik.http.routers.{app}.rule": f"Host(`{gitd.host(app)}`)",
        f"traefik.http.routers.{app}.entrypoints": "web",
        f"traefik.http.services.{app}.loadbalancer.server.port": "5000",
    }
    if ca is not None:
        labels.update({
            f"traefik.http.routers.{app}-tls.rule": f"Host(`{gitd.host(app)}`)",
            f"traefik.http.routers.{app}-tls.entrypoints": "websecure",
            f"traefik.http.routers.{app}-tls.tls": "true",
            f"traefik.http.routers.{app}-tls.service": app,
        })

    def start():
        return client.containers.run(image.id, detach=True, init=True, labels=labels,
                                     environment={"PORT": "5000"},
                                     ports={"5000/tcp": ("127.0.0.1", None)})

    container = start()
    time.sleep(2)
    times = []
    try:
        with load_for(gitd, app, ca, verify=False) as load:
            time.sleep(2)
            for _ in range(deploys):
                started = time.monotonic()
                container.stop(timeout=10)
                container.remove()
                container = start()
                times.append(time.monotonic() - started)
                time.sleep(1.5)  # as long as it takes Traefik to notice
            time.sleep(2)
    finally:
        container.remove(force=True)
        client.images.remove(image.id, force=True)
    return load.summary(), times


def show(name: str, summary: dict, times: list[float]) -> None:
    print(f"{name:<22} sent {summary['sent']:>6}  failed {summary['failed']:>5}  "
          f"rate {summary['rate']:5.1f}/s  p50 {summary['p50_ms']:6.1f} ms  p99 {summary['p99_ms']:7.1f} ms  "
          f"deploy median {statistics.median(times):5.2f} s (min {min(times):.2f}, max {max(times):.2f})")
    if summary["errors"]:
        print(f"{'':<22} errors: {', '.join(summary['errors'])}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--https", action="store_true", help="load over HTTPS")
    parser.add_argument("--scheduler", choices=("docker", "swarm"), default="docker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            bench_gitd(Path(tmp), https=args.https, scheduler=args.scheduler) as (gitd, client):
        ca = MiniCA("gitd bench CA") if args.https else None
        gated, gated_times = gitd_deploys(gitd, Path(tmp), args.deploys, ca)
        naive, naive_times = naive_deploys(gitd, client, Path(tmp), args.deploys, ca)
    scheme = "HTTPS" if args.https else "HTTP"
    print(f"\n{args.deploys} deploys under {scheme} load, scheduler {args.scheduler} "
          "(3 keep-alive + 3 new-connection clients, ~15 req/s each)")
    show("gitd gated swap", gated, gated_times)
    show("stop old, start new", naive, naive_times)
    ratio = gated["failed"] / naive["failed"] if naive["failed"] else float("nan")
    print(f"failed-request ratio gitd/naive: {ratio:.3f}")


if __name__ == "__main__":
    main()
