# syntax=docker/dockerfile:1
# zt-sidecar. Build from the repository root (deploy/scripts/deploy.sh does):
#   docker build -f deploy/docker/zt-sidecar.Dockerfile -t zt-platform/zt-sidecar:dev .
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
    cargo build --release --locked -p zt-sidecar --bin zt-sidecar \
 && install -D -m 0755 target/release/zt-sidecar /out/zt-sidecar

# --- runtime: glibc + libgcc only, no shell, no package manager ---
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/zt-sidecar /usr/local/bin/zt-sidecar
# The pod spec sets the same ids (the app's group gets the secret files).
USER 10000:10000
ENTRYPOINT ["/usr/local/bin/zt-sidecar"]
CMD ["run", "--config", "/etc/zt/sidecar.toml"]
