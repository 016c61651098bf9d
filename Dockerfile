# The basalt binary in a slim image; every service runs from it (see docker-compose.yml). The
# `csi-node` target adds what the CSI node plugin runs on its host: loop devices and mounts
# (util-linux, mount), the filesystems it makes and grows (e2fsprogs, xfsprogs, btrfs-progs) and
# the iSCSI initiator's tools (open-iscsi).
#   docker build -t basalt .
#   docker build --target csi-node -t basalt-csi-node .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin basalt

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/basalt /usr/local/bin/basalt
ENTRYPOINT ["basalt"]

FROM runtime AS csi-node
RUN apt-get update && apt-get install -y --no-install-recommends util-linux mount e2fsprogs xfsprogs btrfs-progs \
        open-iscsi && rm -rf /var/lib/apt/lists/*

# The default target: the services' image.
FROM runtime
