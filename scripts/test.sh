#!/usr/bin/env bash
# Installs what rim's tests need on a fresh Debian machine, then runs every test of the workspace.
#
# Needs: PostgreSQL server binaries (initdb, pg_ctl, postgres), OpenSSL headers (rdkafka is built
# with TLS), Node.js (the JavaScript client's tests), Chromium (the demo page's browser test), the
# `tansu` Kafka-protocol broker (crates.io, built with --features dynostore), cargo-nextest,
# protoc (the Terraform provider's build) and Terraform (its tests; checked, not installed). Each
# is installed only when missing.
# Tests start and stop their own PostgreSQL clusters and brokers on free ports; nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_packages=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${RIM_PG_BIN:-}" ]; then
    apt_packages+=(postgresql)
fi
if ! dpkg -s libssl-dev >/dev/null 2>&1; then
    apt_packages+=(libssl-dev pkg-config)
fi
if ! command -v node >/dev/null 2>&1; then
    apt_packages+=(nodejs)
fi
if [ ! -x /usr/bin/chromium ]; then
    apt_packages+=(chromium) # the demo page's browser test (tests/demo_page.rs), headless
fi
if ! command -v protoc >/dev/null 2>&1; then
    apt_packages+=(protobuf-compiler) # the Terraform provider's plugin protocol (tf-provider's build)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
    log "installing ${apt_packages[*]} (apt)"
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${apt_packages[@]}"
fi

export PATH="$HOME/.cargo/bin:$PATH"
# A one-shot build gains nothing from incremental caches, which would add gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
if ! command -v terraform >/dev/null 2>&1; then
    echo "terraform not found: install Terraform >= 1.6 (https://developer.hashicorp.com/terraform/install);" \
        "the provider's tests (terraform/provider/tests) run it against a real control plane" >&2
    exit 1
fi
if [ -z "${RIM_TANSU_BIN:-}" ] && ! command -v tansu >/dev/null 2>&1; then
    log "installing the tansu Kafka-protocol broker (cargo install, takes a while once)"
    cargo install --locked --debug tansu --version 0.6.0 --features dynostore
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

log "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
# The durable client tests (Rust and JavaScript) run `rim dev`. Without RIM_BIN each builds it with
# `cargo build -p rim`, whose feature set differs from the workspace's: that rebuilds rim (minutes)
# and replaces target/debug/rim while other tests run it. The whole workspace's build below makes
# that binary first, so they are told to use it; a filtered run (arguments) may not build it. The
# target directory is cargo's own answer (absolute, whatever configures it).
if [ $# -eq 0 ] && [ -z "${RIM_BIN:-}" ] && [ -z "${CARGO_BUILD_TARGET:-}" ]; then
    target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    export RIM_BIN="$target_dir/debug/rim"
fi
cargo nextest run --workspace --locked --no-fail-fast "$@"
cargo test --workspace --doc --locked

if [ -d clients/js/test ]; then
    log "JavaScript client tests (node --test)"
    node --test clients/js/test/
fi
