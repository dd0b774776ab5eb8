# syntax=docker/dockerfile:1
# zt-injector. Build from the repository root:
#   docker build -f deploy/docker/zt-injector.Dockerfile -t zt-platform/zt-injector:dev .
ARG RUST_VERSION=1.95.0

# --- build: the whole workspace is copied because Cargo needs every member ---
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY sidecar sidecar
COPY injector injector
COPY probe probe
COPY contracts contracts
COPY app-backend app-backend
COPY app-frontend app-frontend
COPY devstack devstack
COPY bootstrap bootstrap
COPY bench bench
COPY github-standin github-standin
COPY deploy/checks deploy/checks
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p zt-injector --bin zt-injector \
 && install -D -m 0755 target/release/zt-injector /out/zt-injector

# --- runtime: glibc + libgcc only, no shell, no package manager ---
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/zt-injector /usr/local/bin/zt-injector
# The chart's Deployment sets the same ids.
USER 10003:10003
ENTRYPOINT ["/usr/local/bin/zt-injector"]
CMD ["run", "--config", "/etc/zt-injector/injector.toml"]
