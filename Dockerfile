# Multi-stage build of the tripline binary (librdkafka is built from source
# by rdkafka, with SSL and zstd).
#   docker build -t tripline .
FROM rust:1.89-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependencies in a layer of their own: a change to tripline's sources does
# not rebuild librdkafka and the crates. Stub targets stand in for ours.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for b in matching kafka_throughput nats_throughput webhook_throughput kube_throughput; do echo 'fn main() {}' > benches/$b.rs; done \
 && cargo build --release --locked --bin tripline \
 && rm -rf src benches

COPY src src
COPY benches benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin tripline

# Runtime: Debian slim with only what the binary links (libssl, CA
# certificates), as a non-root user; the root filesystem can be read-only
# (the StatefulSet mounts /var/lib/tripline for state).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/tripline /usr/local/bin/tripline
USER 65532:65532
WORKDIR /var/lib/tripline
ENTRYPOINT ["tripline"]
CMD ["serve"]
