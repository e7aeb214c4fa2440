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
# Dependencies first, against placeholder sources, so this layer is rebuilt only when
# Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --features kubernetes \
    && rm -rf src

COPY src ./src
# Make sure cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs \
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
