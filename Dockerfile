# syntax=docker/dockerfile:1
# Build: a fully static binary (musl). Runtime: scratch, that binary alone, as a non-root user.
#   docker build -t elb-ws-proxy .
#   docker build --build-arg TARGET=aarch64-unknown-linux-musl --platform linux/arm64 -t elb-ws-proxy:arm64 .
# The commit the binary reports (--version) comes from REVISION, as there is no checkout inside:
#   docker build --build-arg REVISION=$(git rev-parse --short=12 HEAD) --build-arg CREATED=$(date -u +%FT%TZ) -t elb-ws-proxy .
# scripts/static-smoke.sh builds the binary the same way and runs it alone in an empty root.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
ARG REVISION=""
ENV ELB_WS_PROXY_REVISION=${REVISION}
# musl-gcc compiles mimalloc (the allocator) for the static target.
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
RUN cargo build --release --locked --target "${TARGET}" \
 && cp "target/${TARGET}/release/elb-ws-proxy" /elb-ws-proxy

FROM scratch
COPY --from=build /elb-ws-proxy /elb-ws-proxy
# Docker 20.10+ lets unprivileged processes bind ports below 1024, so 81 and 444 work as 65532.
USER 65532:65532
EXPOSE 81 444
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s --start-period=3s --retries=3 CMD ["/elb-ws-proxy", "healthcheck"]
ENTRYPOINT ["/elb-ws-proxy"]
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="elb-ws-proxy" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.description="Reverse proxy for HTTP and WebSockets behind an AWS load balancer speaking PROXY protocol" \
      org.opencontainers.image.licenses="Apache-2.0"
