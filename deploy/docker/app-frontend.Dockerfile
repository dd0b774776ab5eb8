# syntax=docker/dockerfile:1
# app-frontend (its CSS/JS are compiled into the binary). Build from the
# repository root (deploy/scripts/deploy.sh does):
#   docker build -f deploy/docker/app-frontend.Dockerfile -t zt-platform/app-frontend:dev .
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
    cargo build --release --locked -p app-frontend --bin app-frontend \
 && install -D -m 0755 target/release/app-frontend /out/app-frontend

# --- runtime: glibc + libgcc only, no shell, no package manager ---
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/app-frontend /usr/local/bin/app-frontend
USER 10001:10001
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/app-frontend"]
