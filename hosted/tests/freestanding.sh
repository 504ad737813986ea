#!/usr/bin/env bash
# The global allocator (malloc/) must build for a kernel with nothing but a
# compiler, as the core does (scripts/freestanding.sh), in every option
# combination a kernel would use; together with the core its objects may
# need no symbol except memcpy, memset, memmove.
set -eu
top=${1:-$(dirname "$0")/../..}
cd "$top"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags="-std=c11 -ffreestanding -nostdlib -O2 -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Werror -Iinclude"
allowed='^(memcpy|memset|memmove)$'
status=0

check() { # name nm dir
  local name=$1 nm=$2 dir=$3 undef defined bad
  undef=$("$nm" -u "$dir"/*.o | awk 'NF == 2 { print $2 }' | sort -u)
  defined=$("$nm" --defined-only "$dir"/*.o | awk 'NF == 3 { print $3 }' | sort -u)
  bad=$(comm -23 <(echo "$undef") <(echo "$defined") | grep -Ev "$allowed" | grep -v '^$' || true)
  if [ -n "$bad" ]; then
    echo "$name: needs outside symbols:"; echo "$bad" | sed 's/^/    /'; status=1
  else
    echo "$name: ok"
  fi
}

build() { # name nm cc extra-flags...
  local name=$1 nm=$2 cc=$3; shift 3
  for opts in "" "-DKBUDDY_MALLOC_STD_NAMES=1" "-DKBUDDY_MALLOC_STD_NAMES=1 -DKBUDDY_MALLOC_MAX_CPUS=256 -DKBUDDY_MALLOC_CACHE_SHIFT=14"; do
    local dir="$out/${name// /_}-$(echo "$opts" | md5sum | cut -c1-8)"
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    if ! (cd "$dir" && "$cc" $flags -I"$top/include" "$@" $opts -c "$top"/src/*.c "$top"/malloc/*.c); then
      echo "$name ($opts): does not compile"; status=1; continue
    fi
    check "$name ${opts:-(defaults)}" "$nm" "$dir"
  done
}

top=$(pwd)
build "x86-64 kernel" nm cc -mno-red-zone -mcmodel=kernel -fno-pic
if command -v riscv64-unknown-elf-gcc >/dev/null; then
  build "riscv64 rv64gc" riscv64-unknown-elf-nm riscv64-unknown-elf-gcc -march=rv64gc -mabi=lp64 -mcmodel=medany
  build "riscv64 rv64imac" riscv64-unknown-elf-nm riscv64-unknown-elf-gcc -march=rv64imac -mabi=lp64 -mcmodel=medany
  # The command from the brief, verbatim.
  (cd "$out" && riscv64-unknown-elf-gcc -std=c11 -ffreestanding -nostdlib -mcmodel=medany -Iinclude \
      -I"$top/include" -c "$top"/malloc/kbuddy_malloc.c) && echo "riscv64-unknown-elf-gcc (brief's flags): ok" ||
    { echo "riscv64-unknown-elf-gcc (brief's flags): FAILED"; status=1; }
else
  echo "riscv64-unknown-elf-gcc missing: skipped"
fi
if command -v clang >/dev/null && command -v llvm-nm >/dev/null; then
  build "clang riscv64" llvm-nm clang --target=riscv64-unknown-elf -march=rv64imac -mcmodel=medany
fi
exit $status
