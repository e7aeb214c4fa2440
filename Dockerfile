# shardcache container image.
#
#   docker build -t shardcache .
#   docker run -p 8080:8080 -p 9090:9090 -v "$PWD/data:/data:ro" shardcache
#
# The image's config (config/container.yaml) serves /data on 0.0.0.0:8080 with the disk tier in
# /var/cache/shardcache, encrypted with a key created in /var/lib/shardcache; mount your own config
# at /etc/shardcache/shardcache.yaml (the Helm chart does).

FROM rust:1.95-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# With the `kubernetes` feature: cluster members from EndpointSlices (the chart's default).
# Dependencies first, against placeholder sources for every crate of the workspace, so this
# layer is rebuilt only when a Cargo.toml or Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
COPY crates/types/Cargo.toml crates/types/
COPY crates/metrics/Cargo.toml crates/metrics/
COPY crates/s3/Cargo.toml crates/s3/
COPY crates/store/Cargo.toml crates/store/
COPY crates/upstream/Cargo.toml crates/upstream/
COPY crates/cluster/Cargo.toml crates/cluster/
COPY crates/cache/Cargo.toml crates/cache/
RUN for c in crates/*; do mkdir -p "$c/src" && touch "$c/src/lib.rs"; done \
    && mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --features kubernetes \
    && rm -rf src crates/*/src

COPY crates ./crates
COPY src ./src
# Make sure cargo sees the real sources as newer than the placeholder build.
RUN find src crates -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --features kubernetes \
    && strip target/release/shardcache

FROM debian:bookworm-slim
# ca-certificates: upstream TLS is verified against the system roots.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 65532 --no-create-home --shell /usr/sbin/nologin shardcache \
    && mkdir -p /var/cache/shardcache /var/lib/shardcache /data \
    && chown shardcache /var/cache/shardcache /var/lib/shardcache
COPY --from=build /src/target/release/shardcache /usr/local/bin/shardcache
COPY config/container.yaml /etc/shardcache/shardcache.yaml

USER 65532
# S3 listener, admin listener (/metrics, /healthz, /readyz, /warm).
EXPOSE 8080 9090
# The disk tier, and (apart from it) the key it is encrypted with.
VOLUME ["/var/cache/shardcache", "/var/lib/shardcache"]
ENTRYPOINT ["/usr/local/bin/shardcache"]
CMD ["serve", "--config", "/etc/shardcache/shardcache.yaml"]
