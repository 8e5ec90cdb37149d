# The ruby stack's build (and run) image for the stacks buildpack's tests:
# Debian's own packages, mapped with [base_images] ruby = "gitd-ci/stack-ruby".
FROM gitd-ci/debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ruby bundler >/dev/null \
 && rm -rf /var/lib/apt/lists/*
