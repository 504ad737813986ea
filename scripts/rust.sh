#!/usr/bin/env bash
# The Rust crate (rust/): its tests and doc examples with the cargo on PATH,
# clippy when it is installed, the tests again over 16-byte minimum blocks,
# and with Debian's cargo (Rust 1.63, the oldest the crate supports) when
# that is installed too, under AddressSanitizer when a nightly toolchain is,
# and a bare-metal RISC-V build when the riscv64gc-unknown-none-elf target
# is installed.
# Everything offline: the crate has no dependencies.
set -eu
cd "$(dirname "$0")/../rust"

# rustup's cargo lives in ~/.cargo/bin, which a non-login shell may not
# have on PATH (scripts/deps.sh counts it as installed).
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/nonexistent}/.cargo/bin/cargo" ]; then
  PATH="$PATH:$HOME/.cargo/bin"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Debian's cargo (apt-get install cargo) or rustup" >&2
  exit 1
fi
# A failing test must print its message, not a backtrace: symbolising one
# needs more memory than the no_main tests' heaps hold.
export RUST_BACKTRACE=0

echo "-- cargo test ($(cargo --version))"
cargo test --offline

if cargo clippy --version >/dev/null 2>&1; then
  echo "-- cargo clippy"
  cargo clippy --offline --all-targets -- -D warnings
else
  echo "-- cargo clippy: not installed, skipped"
fi

echo "-- cargo test with 16-byte minimum blocks (CFLAGS=-DKBUDDY_MIN_BLOCK_SHIFT=4)"
CFLAGS=-DKBUDDY_MIN_BLOCK_SHIFT=4 CARGO_TARGET_DIR=target/shift4 cargo test --offline

if [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && [ "$(command -v cargo)" != /usr/bin/cargo ]; then
  echo "-- cargo test with Debian's toolchain ($(/usr/bin/rustc --version))"
  CARGO_TARGET_DIR=target/debian RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
    /usr/bin/cargo test --offline
fi

# AddressSanitizer over the Rust and the C together, and UBSan over the C
# (trapping: no runtime to link), when clang and a nightly toolchain are
# there (-Zsanitizer is nightly-only). Leaks are not checked: tests leak
# metadata on purpose to get &'static mut buffers.
if command -v clang >/dev/null 2>&1 && cargo +nightly --version >/dev/null 2>&1; then
  host=$(rustc -vV | sed -n 's/^host: //p')
  echo "-- cargo +nightly test under AddressSanitizer (Rust and C) + UBSan (C)"
  ASAN_OPTIONS=detect_leaks=0 CC=clang CFLAGS="-fsanitize=address,undefined -fsanitize-trap=undefined -fno-omit-frame-pointer" \
    RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
    cargo +nightly test --offline --target "$host" --tests
else
  echo "-- AddressSanitizer: needs clang and a nightly toolchain, skipped"
fi

if command -v rustup >/dev/null 2>&1 &&
   rustup target list --installed 2>/dev/null | grep -qx riscv64gc-unknown-none-elf; then
  echo "-- cargo build --target riscv64gc-unknown-none-elf"
  cargo build --offline --target riscv64gc-unknown-none-elf
else
  echo "-- riscv64gc-unknown-none-elf: target not installed, skipped"
fi
