# syntax=docker/dockerfile:1
# app-backend. Build from the repository root (deploy/scripts/deploy.sh does):
#   docker build -f deploy/docker/app-backend.Dockerfile -t zt-platform/app-backend:dev .
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
    cargo build --release --locked -p app-backend --bin app-backend \
 && install -D -m 0755 target/release/app-backend /out/app-backend

# --- runtime: glibc + libgcc only, no shell, no package manager ---
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/app-backend /usr/local/bin/app-backend
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/app-backend"]
