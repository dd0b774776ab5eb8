# syntax=docker/dockerfile:1
# The OpenBao bootstrap image (deploy/k8s/openbao/bootstrap.yaml): the zt-bootstrap
# binary (init/unseal/configure OpenBao: the same code as `make up`), the
# policies/ folder it reads, psql for policies/postgres/roles.sql and kubectl
# to keep the unseal keys in a Secret. Build from the repository root:
#   docker build -f deploy/docker/zt-bootstrap.Dockerfile -t zt-platform/zt-bootstrap:dev .
ARG KUBERNETES_VERSION=1.36.4
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
    cargo build --release --locked -p zt-bootstrap --bin zt-bootstrap \
 && install -D -m 0755 target/release/zt-bootstrap /out/zt-bootstrap

# kubectl from the Kubernetes project's own image (same version as the cluster).
FROM registry.k8s.io/kubectl:v${KUBERNETES_VERSION} AS kubectl

# --- runtime: Debian slim (a shell for bootstrap.sh, psql) ---
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/zt-bootstrap /usr/local/bin/zt-bootstrap
COPY --from=kubectl /bin/kubectl /usr/local/bin/kubectl
COPY policies /opt/zt/policies
COPY --chmod=0755 deploy/bootstrap/bootstrap.sh /opt/zt/bootstrap.sh
COPY --chmod=0755 deploy/bootstrap/apply-roles.sh /opt/zt/apply-roles.sh
USER 10002:10002
ENTRYPOINT ["/opt/zt/bootstrap.sh"]
