# syntax=docker/dockerfile:1
# Build: a fully static binary (musl). Runtime: scratch, that binary alone, as a non-root user.
#   docker build -t elb-ws-proxy .
#   docker buildx build --platform linux/amd64,linux/arm64 -t elb-ws-proxy .
# The build stage runs on the target platform (natively on Graviton, or under QEMU) and picks
# the Rust target from TARGETARCH. scripts/build-static.sh cross-builds either binary instead,
# and the runtime stage alone takes one: --build-context build=<dir holding elb-ws-proxy>.
# The commit the binary reports (--version) comes from REVISION, as there is no checkout inside:
#   docker build --build-arg REVISION=$(git rev-parse --short=12 HEAD) --build-arg CREATED=$(date -u +%FT%TZ) \
#     --build-arg SOURCE=$(git remote get-url origin) -t elb-ws-proxy .
# scripts/static-smoke.sh builds the binary the same way and runs it alone in an empty root.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
ARG REVISION=""
ENV ELB_WS_PROXY_REVISION=${REVISION}
# musl-gcc compiles mimalloc (the allocator) for the static target.
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac > /target \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(cat /target)"
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
RUN cargo build --release --locked --target "$(cat /target)" \
 && cp "target/$(cat /target)/release/elb-ws-proxy" /elb-ws-proxy

FROM scratch
COPY --from=build /elb-ws-proxy /elb-ws-proxy
# Ports above 1023: podman and some Kubernetes runtimes keep lower ports privileged, and the
# process runs as 65532 (Docker 20.10+ lets it bind 81 and 444 too, as the nginx image used).
USER 65532:65532
EXPOSE 8081 8444
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s --start-period=3s --retries=3 CMD ["/elb-ws-proxy", "healthcheck"]
ENTRYPOINT ["/elb-ws-proxy"]
ARG REVISION=unknown
ARG CREATED=unknown
# The repository's URL, which a checkout does not know: --build-arg SOURCE=https://…
ARG SOURCE=""
LABEL org.opencontainers.image.title="elb-ws-proxy" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.description="Reverse proxy for HTTP and WebSockets behind an AWS load balancer speaking PROXY protocol" \
      org.opencontainers.image.licenses="Apache-2.0"
