# syntax=docker/dockerfile:1
#
# The Lattice binaries in a small image:
#   lattice        the CLI and the control plane (`lattice control`); `lattice host` runs
#                  lattice-host
#   lattice-host   the host
#   lattice-provider-keyvalue-nats, -keyvalue-redis, -mqtt
#                  the provider programs a host starts for `provider:<name>` links; the host
#                  looks for them next to itself, so they sit beside it in /usr/local/bin
#
#   docker build -t lattice .
#   docker run --rm lattice --help
#
# docker-compose.yml uses this image for the control plane and the hosts.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Only the programs: `lattice` (package `lattice-cli`), `lattice-host` (package `lattice-host`)
# and the provider processes (packages `lattice-provider-*`). (The test crate's build script builds the example components for
# wasm32-wasip2, which an image does not need.) In the workspace's `edge`
# profile (Cargo.toml: built for size, fat LTO, stripped), the one gateways run: a host's
# resident memory is mostly its own code (BENCHMARKS.md, section 3). Its output is in
# `target/edge/`.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile edge --locked -p lattice-cli -p lattice-host \
      -p lattice-provider-keyvalue-nats -p lattice-provider-keyvalue-redis -p lattice-provider-mqtt --bins \
 && install -D -m 0755 -t /out target/edge/lattice target/edge/lattice-host \
      target/edge/lattice-provider-keyvalue-nats target/edge/lattice-provider-keyvalue-redis \
      target/edge/lattice-provider-mqtt

FROM debian:bookworm-slim
# CA certificates for TLS connections to NATS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# An unprivileged user whose home holds the host's state (mount a volume there to keep it).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/lattice lattice
COPY --from=build /out/ /usr/local/bin/
USER lattice
WORKDIR /var/lib/lattice
ENV LATTICE_HOST_STATE_DIR=/var/lib/lattice/host
ENTRYPOINT ["lattice"]
CMD ["--help"]
