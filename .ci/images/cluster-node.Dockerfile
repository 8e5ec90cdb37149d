# A swarm node for the cluster tests (tests/e2e/test_cluster.py): the
# Docker-in-Docker node plus what a real node needs (a static busybox at
# /bin/busybox for gitd's health checks) and what the manager node needs to
# run gitd from its wheel (python3 with venv; Traefik comes from a wheel too)
# and a registry every node reaches (Debian's docker-registry).
FROM gitd-ci/dind
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      busybox-static python3 python3-venv docker-registry git >/dev/null \
 && rm -rf /var/lib/apt/lists/*
CMD ["dockerd", "--storage-driver", "vfs"]
