# The scraper sidecar (wis-scraper). Build from the repository root:
#   docker build -f manifests/images/scraper.Dockerfile -t REGISTRY/wis-scraper:TAG .
# Multi-stage: a pinned Rust toolchain compiles a static musl binary; the runtime image is a
# pinned debian slim (distroless publishes no version tags, only moving ones and digests we cannot
# look up offline) running as an unprivileged numeric user.
FROM docker.io/library/rust:1.95.0-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update \
    && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p wis-scraper --target x86_64-unknown-linux-musl \
    && cp target/x86_64-unknown-linux-musl/release/wis-scraper /wis-scraper

FROM docker.io/library/debian:12.8-slim
COPY --from=build /wis-scraper /usr/local/bin/wis-scraper
# Numeric so the pod's runAsNonRoot can verify it; no home or shell needed.
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/wis-scraper"]
