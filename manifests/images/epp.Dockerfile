# wis-epp, the scheduling core as a GAIE Endpoint Picker. Build from the repository root:
#   docker build -f manifests/images/epp.Dockerfile -t REGISTRY/wis-epp:TAG .
# Multi-stage like the scraper's: a pinned Rust toolchain compiles a static musl binary; the runtime
# image is a pinned debian slim running as an unprivileged numeric user.
FROM docker.io/library/rust:1.95.0-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update \
    && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p wis-epp --target x86_64-unknown-linux-musl \
    && cp target/x86_64-unknown-linux-musl/release/wis-epp /wis-epp

FROM docker.io/library/debian:12.8-slim
COPY --from=build /wis-epp /usr/local/bin/wis-epp
# Numeric so the pod's runAsNonRoot can verify it; no home or shell needed.
USER 65532:65532
EXPOSE 9002 9003 9090
ENTRYPOINT ["/usr/local/bin/wis-epp"]
