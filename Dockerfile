# The pincapi image: the gateway alone, as a non-root user, its SQLite store on the /data
# volume. Configure it with PINCAPI_* variables or a file mounted at /etc/pincapi/pincapi.toml
# (PINCAPI_CONFIG); deploy/compose.yaml runs it with PostgreSQL and Caddy.
#
#   podman build -t pincapi .        (or docker build)
#
# Build arguments:
#   BUILDER_BASE  the Rust image the binary is built in
#   RUNTIME_BASE  the image it runs on (any glibc Debian 12 or newer; the test suite builds
#                 on a local base made with debootstrap, as no registry is reachable there)
#   BINARY        `builder` (default) compiles here; `prebuilt` takes prebuilt/pincapi from
#                 the build context instead (the test suite, which has the binary already)
ARG BUILDER_BASE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_BASE=docker.io/library/debian:bookworm-slim
ARG BINARY=builder

FROM ${BUILDER_BASE} AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pincapi \
 && install -D -m 0755 target/release/pincapi /out/pincapi

FROM scratch AS prebuilt
COPY prebuilt/pincapi /out/pincapi

FROM ${BINARY} AS binary

FROM ${RUNTIME_BASE}
COPY --from=binary /out/pincapi /usr/local/bin/pincapi
RUN groupadd --system --gid 10001 pincapi \
 && useradd --system --uid 10001 --gid pincapi --home-dir /data --shell /usr/sbin/nologin pincapi \
 && install -d -o pincapi -g pincapi -m 0700 /data \
 && install -d -m 0755 /etc/pincapi
ENV PINCAPI_LISTEN=0.0.0.0:8080 \
    PINCAPI_STORE=sqlite:///data/pincapi.db \
    PINCAPI_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
USER pincapi:pincapi
WORKDIR /data
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["pincapi", "healthcheck"]
ENTRYPOINT ["pincapi"]
CMD ["serve"]
