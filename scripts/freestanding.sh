#!/usr/bin/env bash
# The core must compile with nothing but a compiler, for riscv64 and x86-64,
# and its objects may reference no symbol except memcpy, memset, memmove.
set -eu
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags="-std=c11 -ffreestanding -nostdlib -O2 -Wall -Wextra -Wpedantic -Wconversion -Werror -Iinclude"
allowed='^(memcpy|memset|memmove)$'
status=0

check_objects() { # name nm objects...
  local name=$1 nm=$2; shift 2
  local undef
  undef=$("$nm" -u "$@" | awk 'NF == 2 { print $2 }' | sort -u)
  # Internal symbols defined by another core object are fine.
  local defined
  defined=$("$nm" --defined-only "$@" | awk 'NF == 3 { print $3 }' | sort -u)
  local bad
  bad=$(comm -23 <(echo "$undef") <(echo "$defined") | grep -Ev "$allowed" | grep -v '^$' || true)
  if [ -n "$bad" ]; then
    echo "$name: core objects need outside symbols:"; echo "$bad" | sed 's/^/    /'; status=1
  else
    echo "$name: ok (outside symbols: $(comm -23 <(echo "$undef") <(echo "$defined") | tr '\n' ' '))"
  fi
}

# The command from the issue, verbatim: a hosted compiler with no flags.
(cd "$out" && cc -std=c11 -I"$OLDPWD/include" -c "$OLDPWD"/src/*.c)
echo; echo "cc -std=c11 -Iinclude -c src/*.c: ok"

mkdir -p "$out/x86"
(cd "$out/x86" && cc $flags -I"$OLDPWD/include" -mno-red-zone -mcmodel=kernel -fno-pic -c "$OLDPWD"/src/*.c)
check_objects "x86-64 freestanding" nm "$out"/x86/*.o

if command -v riscv64-unknown-elf-gcc >/dev/null; then
  for march in rv64gc rv64imac; do
    mkdir -p "$out/$march"
    (cd "$out/$march" && riscv64-unknown-elf-gcc $flags -I"$OLDPWD/include" -march=$march \
        -mabi=lp64 -mcmodel=medany -c "$OLDPWD"/src/*.c 2>&1) || { status=1; continue; }
    check_objects "riscv64 ($march) freestanding" riscv64-unknown-elf-nm "$out/$march"/*.o
  done
  # -mabi=lp64d is the Debian default for rv64gc; lp64 above avoids FP regs.
else
  echo "riscv64-unknown-elf-gcc missing: apt-get install gcc-riscv64-unknown-elf"; status=1
fi

if command -v clang >/dev/null; then
  mkdir -p "$out/clang-rv"
  (cd "$out/clang-rv" && clang --target=riscv64-unknown-elf $flags -I"$OLDPWD/include" \
      -march=rv64imac -mcmodel=medany -c "$OLDPWD"/src/*.c) &&
    check_objects "clang riscv64 freestanding" llvm-nm "$out"/clang-rv/*.o 2>/dev/null ||
    echo "clang riscv64: skipped (no llvm-nm)"
fi
exit $status
