# pgmux as a container (standalone service or sidecar). Build: docker build -t pgmux .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin pgmux

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 pgmux
COPY --from=build /src/target/release/pgmux /usr/local/bin/pgmux
COPY proxy.yaml /etc/pgmux/proxy.yaml
USER pgmux
EXPOSE 6432 6433 9930
ENV PGMUX_CONFIG=/etc/pgmux/proxy.yaml
ENTRYPOINT ["/usr/local/bin/pgmux"]
