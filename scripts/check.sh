#!/usr/bin/env bash
# Run every check CI runs, in order, and keep going past a failure so that
# one run reports everything. Each step's output is shown; the closing line
# counts the steps: "checks: N passed, N failed".
set -u
cd "$(dirname "$0")/.." || exit 2

# Every tool the steps use, installed now if missing (Debian packages,
# apt-get as root or through sudo); where that cannot be done, deps.sh
# prints the command to type and nothing runs.
if ! ./scripts/deps.sh check; then
  echo "checks: not run: tools missing (above)"; exit 1
fi

steps=(
  "release build + unit tests (gcc -Werror)|make --no-print-directory test-release"
  "16-byte minimum blocks (KBUDDY_MIN_BLOCK_SHIFT=4)|make --no-print-directory test-shift4"
  "the core built for size (-Os, KBUDDY_SMALL)|make --no-print-directory test-small"
  "AddressSanitizer + UBSan (clang)|make --no-print-directory test-asan"
  "ThreadSanitizer (threaded tests)|make --no-print-directory test-tsan"
  "coverage of src/ (gcovr)|make --no-print-directory coverage"
  "libFuzzer targets|make --no-print-directory fuzz"
  "freestanding cross-compile + nm|make --no-print-directory freestanding"
  "cppcheck + clang-tidy|make --no-print-directory lint"
  "install + outside project (find_package, pkg-config, add_subdirectory)|make --no-print-directory test-install"
  "Rust crate: cargo test, clippy (rust/)|scripts/rust.sh"
)
if [ -f examples/riscv/Makefile ]; then
  steps+=("QEMU demo kernel (-smp 4)|make --no-print-directory -C examples/riscv check")
fi
[ -n "${KBUDDY_CHECK_EXTRA:-}" ] && steps+=("$KBUDDY_CHECK_EXTRA")

passed=0 failed=0 failures=()
for s in "${steps[@]}"; do
  name=${s%%|*} cmd=${s#*|}
  echo "=================================================================="
  echo "== $name"
  echo "=================================================================="
  start=$(date +%s)
  if bash -c "$cmd"; then
    passed=$((passed + 1)); echo "== ok: $name ($(( $(date +%s) - start ))s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "== FAILED: $name"
  fi
done
echo
for f in "${failures[@]+"${failures[@]}"}"; do echo "failed: $f"; done
echo "checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
