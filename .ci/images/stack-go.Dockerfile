# The go stack's build (and run) image for the stacks buildpack's tests:
# Debian's own packages, mapped with [base_images] go = "gitd-ci/stack-go".
FROM gitd-ci/debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go >/dev/null \
 && rm -rf /var/lib/apt/lists/*
