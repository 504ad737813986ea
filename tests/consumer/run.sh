#!/usr/bin/env bash
# kbuddy as an outside project sees it: install into a temporary prefix
# (`make install PREFIX=...`, the README's command), check what landed
# there, then build and run tests/consumer/consumer.c against it
#   1. find_package(kbuddy 1.0 CONFIG), kbuddy::malloc      (CMake)
#   2. pkg-config --cflags --libs kbuddy-malloc              (plain cc)
#   3. add_subdirectory(<this source tree>), kbuddy::malloc  (CMake), which
#      must build the two libraries and nothing else
#   4. the installed sources compiled with the consumer's flags (kernels)
#   5. the consumer under LD_PRELOAD of the installed libkbuddy-malloc.so
#   6. add_subdirectory into a bare-metal riscv64 cross build: a kernel's
#      static library on kbuddy::malloc, no libc, threads or -fPIC
# Each consumer run checks exact results of heap, frame and kbm_ calls and
# prints "...: ok"; any failure fails the script. The prefix and the
# builds live in a temporary directory removed at exit.
set -u
cd "$(dirname "$0")/../.." || exit 2
top=$(pwd)
src=$top/tests/consumer
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
CC=${CC:-cc}
fail=0
step() { echo "-- $*"; }
bad() { echo "FAILED: $*"; fail=1; }
# Runs the consumer binary $1 and checks it said ok.
run_consumer() {
  local out
  out=$("$@" 2>&1); local rc=$?
  echo "$out" | sed 's/^/   /'
  [ $rc -eq 0 ] && echo "$out" | grep -q '): kbuddy [0-9.]*: heap, frames, kbm_malloc: ok$'
}
# A CMake build of the consumer: build_consumer DIR -D...
build_consumer() {
  local dir=$1; shift
  cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.log" 2>&1 &&
    cmake --build "$dir" -j2 >>"$dir.log" 2>&1 || { sed 's/^/   /' "$dir.log" | tail -n 30; return 1; }
}

step "make install PREFIX=$prefix"
make --no-print-directory install PREFIX="$prefix" >"$work/install.log" 2>&1 ||
  { tail -n 30 "$work/install.log"; bad "make install"; exit 1; }
libdir=lib # or lib64, lib/<multiarch>: wherever GNUInstallDirs put it
for d in lib lib64 "$prefix"/lib/*; do
  d=${d#"$prefix"/}
  if [ -f "$prefix/$d/libkbuddy.a" ]; then libdir=$d; break; fi
done
expected=(include/kbuddy.h include/kbuddy_malloc.h "$libdir/libkbuddy.a" "$libdir/libkbuddy_malloc.a"
          "$libdir/libkbuddy-malloc.so" "$libdir/cmake/kbuddy/kbuddyConfig.cmake"
          "$libdir/cmake/kbuddy/kbuddyConfigVersion.cmake" "$libdir/cmake/kbuddy/kbuddyTargets.cmake"
          "$libdir/pkgconfig/kbuddy.pc" "$libdir/pkgconfig/kbuddy-malloc.pc"
          share/kbuddy/src/heap.c share/kbuddy/src/kbuddy_internal.h share/kbuddy/malloc/kbuddy_malloc.c)
for f in "${expected[@]}"; do [ -f "$prefix/$f" ] || bad "not installed: $f"; done
echo "   installed: $(cd "$prefix" && find . -type f | wc -l) files, ${expected[*]}"

step "1. find_package(kbuddy 1.0 CONFIG REQUIRED COMPONENTS malloc)"
if build_consumer "$work/fp" -DKBUDDY_VIA=find_package -DCMAKE_PREFIX_PATH="$prefix"; then
  grep -- '-- kbuddy ' "$work/fp.log" | sed 's/^/   /'
  run_consumer "$work/fp/consumer" || bad "find_package consumer"
else bad "find_package build"; fi
# The version file must refuse what the install cannot give.
if cmake -S "$src" -B "$work/fp2" -DKBUDDY_VIA=find_package -DCMAKE_PREFIX_PATH="$prefix" \
     -DKBUDDY_REQUIRE_VERSION=2.0 >"$work/fp2.log" 2>&1; then
  bad "find_package(kbuddy 2.0) accepted version $(grep -o 'kbuddy [0-9.]* from' "$work/fp2.log")"
else echo "   find_package(kbuddy 2.0): refused, as it must be"; fi

step "2. pkg-config kbuddy-malloc, plain $CC"
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
if ! command -v pkg-config >/dev/null; then bad "pkg-config not found"
else
  v=$(pkg-config --modversion kbuddy-malloc)
  hv=$(awk '/#define KBUDDY_VERSION_(MAJOR|MINOR|PATCH)/ { printf "%s%s", s, $3; s = "." }' include/kbuddy.h)
  [ "$v" = "$hv" ] || bad "pkg-config version $v, header $hv"
  # Split on purpose: pkg-config's output is a list of flags.
  # shellcheck disable=SC2207
  cmd=("$CC" -std=c11 -Wall -Wextra -Werror -DCONSUMER_HOW='"pkg-config"' $(pkg-config --cflags kbuddy-malloc)
       "$src/consumer.c" -o "$work/pc-consumer" $(pkg-config --libs kbuddy-malloc))
  echo "   ${cmd[*]}"
  if "${cmd[@]}"; then run_consumer "$work/pc-consumer" || bad "pkg-config consumer"
  else bad "pkg-config build"; fi
fi

step "3. add_subdirectory($top)"
if build_consumer "$work/sub" -DKBUDDY_VIA=subdirectory -DKBUDDY_SOURCE_DIR="$top"; then
  run_consumer "$work/sub/consumer" || bad "add_subdirectory consumer"
  # kbuddy's part of that build: its two libraries and nothing else.
  built=$(cd "$work/sub/kbuddy" && find . -type f \( -name '*.a' -o -name '*.so' -o -perm -u+x \) |
          sed 's|^\./||' | sort | tr '\n' ' ')
  echo "   kbuddy built: $built"
  [ "$built" = "libkbuddy.a libkbuddy_malloc.a " ] || bad "add_subdirectory built more than the libraries"
  ntests=$(cd "$work/sub" && ctest -N 2>/dev/null | sed -n 's/^Total Tests: //p')
  [ "${ntests:-0}" = 0 ] || bad "add_subdirectory registered $ntests tests in the outside project"
  ! grep -q -- '-Werror' "$work/sub/kbuddy/CMakeFiles/kbuddy.dir/flags.make" ||
    bad "add_subdirectory compiles kbuddy with -Werror"
else bad "add_subdirectory build"; fi

step "4. the installed sources, compiled by the consumer (KBUDDY_CORE_SOURCES)"
if build_consumer "$work/srcs" -DKBUDDY_VIA=sources -DCMAKE_PREFIX_PATH="$prefix"; then
  run_consumer "$work/srcs/consumer" || bad "sources consumer"
else bad "sources build"; fi

step "5. LD_PRELOAD=$libdir/libkbuddy-malloc.so"
stats=$work/preload-stats.txt
if run_consumer env LD_PRELOAD="$prefix/$libdir/libkbuddy-malloc.so" KBUDDY_MALLOC_STATS="$stats" \
     "$work/pc-consumer"; then
  if grep -q '^kbuddy-malloc: pid [0-9]*: live' "$stats" 2>/dev/null; then
    echo "   the library served it: $(head -n 1 "$stats")"
  else bad "LD_PRELOAD: libkbuddy-malloc.so did not report; was it loaded?"; fi
else bad "LD_PRELOAD consumer"; fi

step "6. add_subdirectory in a bare-metal riscv64 cross build (riscv64-elf.cmake)"
if ! command -v riscv64-unknown-elf-gcc >/dev/null; then bad "riscv64-unknown-elf-gcc not found"
elif build_consumer "$work/kernel" -DKBUDDY_VIA=kernel -DKBUDDY_SOURCE_DIR="$top" \
       -DCMAKE_TOOLCHAIN_FILE="$src/riscv64-elf.cmake"; then
  # No libc, no threads, no -fPIC: the kernel's objects and kbuddy's need
  # nothing outside them but memcpy/memset/memmove.
  objs=("$work/kernel/libkernel.a" "$work/kernel/kbuddy/libkbuddy_malloc.a" "$work/kernel/kbuddy/libkbuddy.a")
  undef=$(riscv64-unknown-elf-nm -u "${objs[@]}" | awk 'NF == 2 { print $2 }' | sort -u)
  defined=$(riscv64-unknown-elf-nm --defined-only "${objs[@]}" | awk 'NF == 3 { print $3 }' | sort -u)
  outside=$(comm -23 <(echo "$undef") <(echo "$defined") | grep -v '^$' | tr '\n' ' ')
  echo "   built libkernel.a, libkbuddy_malloc.a, libkbuddy.a for riscv64; outside symbols: $outside"
  [ -z "$(echo "$outside" | tr ' ' '\n' | grep -Ev '^(memcpy|memset|memmove)?$')" ] ||
    bad "the cross-built kernel needs symbols beyond memcpy/memset/memmove"
  ! grep -q -- '-fPIC' "$work/kernel/kbuddy/CMakeFiles/kbuddy.dir/flags.make" ||
    bad "the bare-metal build compiles kbuddy with -fPIC"
else bad "bare-metal cross build"; fi

[ $fail -eq 0 ] && echo "consumer: ok (find_package, pkg-config, add_subdirectory, sources, LD_PRELOAD, riscv64 add_subdirectory)"
exit $fail
