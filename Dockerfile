# weft's image: the CNI plugin (weft), the agent (weftd) and the CLI (weftctl) on a small Debian runtime with
# nft and ip, as deploy/weft.yaml runs it (init container copies `weft` to /opt/cni/bin; weftd runs the node).
#
#   docker build -t localhost/weft:0.1.0 .        (or: podman build -t localhost/weft:0.1.0 .)
#
# Not built in CI: the project's machines have no container engine that can build images. The manifest test
# (crates/store-kube/tests/manifests.rs) checks deploy/weft.yaml, not this file.

FROM rust:1-bookworm AS build
# No system protoc: etcd-client's build script runs the vendored one (.cargo/config.toml, scripts/protoc).
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p weft-cni -p weft-agent -p weftctl \
 && mkdir -p /out \
 && cp target/release/weft target/release/weftd target/release/weftctl /out/

FROM debian:bookworm-slim
# nftables: weftd programs its firewall and policy tables with `nft`. iproute2: `ip` for operators debugging a
# node from the pod. containernetworking-plugins: portmap, chained after weft for hostPort (the init
# container installs it only where the node has none).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iproute2 containernetworking-plugins ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/weft /out/weftd /out/weftctl /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/weftd"]
