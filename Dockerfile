# pgmux as a container: a standalone pooler service or a sidecar (README, "Containers").
#   docker build -t pgmux --build-arg PGMUX_COMMIT=$(git rev-parse --short HEAD) .
# The base images are arguments so that a mirror or a locally made base can stand in (the
# repository's container test, tests/container.rs, builds this file with both replaced).
ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
# Distroless: glibc and CA certificates, no shell, no package manager. Any glibc-based image works.
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
ARG PGMUX_COMMIT=""
ENV PGMUX_COMMIT=${PGMUX_COMMIT}
WORKDIR /src
# Exactly what `cargo build` needs: the manifest names benches/ too.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The release profile keeps debug info for profiling; the image does not need it.
RUN cargo build --release --locked --bin pgmux --config profile.release.debug=0 --config profile.release.strip=true

FROM ${RUNTIME_BASE}
ARG PGMUX_VERSION=0.1.0
ARG PGMUX_COMMIT=""
LABEL org.opencontainers.image.title="pgmux" \
      org.opencontainers.image.description="PostgreSQL connection-pooling proxy" \
      org.opencontainers.image.version="${PGMUX_VERSION}" \
      org.opencontainers.image.revision="${PGMUX_COMMIT}"
COPY --from=build /src/target/release/pgmux /usr/local/bin/pgmux
# Container defaults only (all interfaces, no user, no password, no admin user): servers and users
# come from PGMUX_* variables, or mount a whole file over this one.
COPY deploy/container/proxy.yaml /etc/pgmux/proxy.yaml
ENV PGMUX_CONFIG=/etc/pgmux/proxy.yaml
# Numeric, so that it needs no /etc/passwd entry (distroless's `nonroot`).
USER 65532:65532
# Clients, reader endpoint (when PGMUX_READER_LISTEN is set), admin HTTP (/healthz, /readyz, /metrics).
EXPOSE 6432 6433 9930
# Liveness; orchestrators that gate traffic or dependants use `pgmux health --ready` (deploy/).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/usr/local/bin/pgmux", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pgmux"]
