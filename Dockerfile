# syntax=docker/dockerfile:1
# The Batch jobs' image: the `runtime` binary on PATH (job commands are `runtime prepare ...`,
# `runtime train ...`, so there is no ENTRYPOINT to prepend to them).
#
#   docker build --target cpu -t runtime:cpu .
#   docker build --target gpu -t runtime:gpu .     # burn's CUDA backend (`--device cuda`)
#
# Then push to the stack's repository (`provision output --json` prints its URI).

ARG RUST_VERSION=1.95.0
ARG CUDA_VERSION=12.8.1
ARG UBUNTU=ubuntu24.04

# Cargo reads every workspace member's manifest, so all of them come in; only `runtime` builds.
FROM scratch AS sources
COPY Cargo.toml Cargo.lock /src/
COPY provision /src/provision
COPY runtime /src/runtime
COPY testkit /src/testkit
COPY report /src/report

# ---- CPU ---------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS cpu-build
COPY --from=sources /src /src
WORKDIR /src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p runtime \
    && install -m 0755 target/release/runtime /usr/local/bin/runtime

FROM debian:bookworm-slim AS cpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home --home-dir /work runtime
COPY --from=cpu-build /usr/local/bin/runtime /usr/local/bin/runtime
USER runtime
WORKDIR /work
CMD ["runtime", "--help"]

# ---- GPU ---------------------------------------------------------------------------------
# Built on the CUDA devel image so cudarc detects the toolkit's version from nvcc.
FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS gpu-build
ARG RUST_VERSION
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
COPY --from=sources /src /src
WORKDIR /src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p runtime --features cuda \
    && install -m 0755 target/release/runtime /usr/local/bin/runtime

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU} AS gpu
# burn's CUDA backend compiles its kernels at run time with NVRTC (in the runtime image) and
# includes the toolkit's headers, which only the devel image has.
COPY --from=gpu-build /usr/local/cuda/include /usr/local/cuda/include
COPY --from=gpu-build /usr/local/bin/runtime /usr/local/bin/runtime
RUN useradd --uid 10001 --create-home --home-dir /work runtime
ENV CUDA_PATH=/usr/local/cuda
USER runtime
WORKDIR /work
CMD ["runtime", "--help"]
