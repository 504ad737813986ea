#!/usr/bin/env bash
# The code a kernel compiles, src/*.c (the core) and malloc/*.c (the global
# allocator, default kernel configuration), must compile warning-free with a
# kernel's flags, at every optimisation level a kernel uses, under every
# compiler it might use; and the objects may reference no symbol except
# memcpy, memset, memmove.
#
# The matrix: gcc and clang for x86-64 (-mcmodel=kernel), riscv64-unknown-elf-gcc
# (rv64imac and rv64gc) and clang for riscv64, and clang for the 32-bit targets
# of teaching kernels (riscv32, i386: xv6's first), each at -O0 -O1 -Og -O2 -O3 -Os,
# with  -std=c11 -Wall -Wextra -Werror -ffreestanding  (xv6's kind of flags)
# plus the project's own stricter warnings (CMakeLists.txt KBUDDY_WARNINGS),
# so that clean here means clean under any subset of them. gcc's
# -Wmaybe-uninitialized depends on the inliner, hence every level.
set -u
cd "$(dirname "$0")/.." || exit 2
top=$(pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

levels=(-O0 -O1 -Og -O2 -O3 -Os)
integrator="-std=c11 -Wall -Wextra -Werror -ffreestanding"
strict="-Wpedantic -Wconversion -Wsign-conversion -Wshadow -Wcast-align -Wstrict-prototypes
        -Wmissing-prototypes -Wundef -Wvla"
kernel="-nostdlib -fno-common -fno-stack-protector"
sources=("$top"/src/*.c "$top"/malloc/*.c)
allowed='^(memcpy|memset|memmove)$'
# name|compiler|nm|target flags
toolchains=(
  "gcc x86-64|gcc|nm|-mno-red-zone -mcmodel=kernel -fno-pic"
  "clang x86-64|clang|llvm-nm|-mno-red-zone -mcmodel=kernel -fno-pic"
  "gcc riscv64 rv64imac|riscv64-unknown-elf-gcc|riscv64-unknown-elf-nm|-march=rv64imac -mabi=lp64 -mcmodel=medany"
  "gcc riscv64 rv64gc|riscv64-unknown-elf-gcc|riscv64-unknown-elf-nm|-march=rv64gc -mabi=lp64d -mcmodel=medany"
  "clang riscv64 rv64imac|clang|llvm-nm|--target=riscv64-unknown-elf -march=rv64imac -mabi=lp64 -mcmodel=medany"
  "clang riscv32 rv32imac|clang|llvm-nm|--target=riscv32-unknown-elf -march=rv32imac -mabi=ilp32 -mcmodel=medany"
  "clang i386|clang|llvm-nm|--target=i386-unknown-none-elf -fno-pic"
)
status=0
details=()

# The outside symbols the objects in $2 need, beyond each other's.
outside_symbols() { # nm dir
  local undef defined
  undef=$("$1" -u "$2"/*.o | awk 'NF == 2 { print $2 }' | sort -u)
  defined=$("$1" --defined-only "$2"/*.o | awk 'NF == 3 { print $3 }' | sort -u)
  comm -23 <(echo "$undef") <(echo "$defined") | grep -v '^$'
}

# The command from the original issue, verbatim: a hosted compiler, no flags.
if (cd "$out" && cc -std=c11 -I"$top/include" -c "$top"/src/*.c); then
  echo "cc -std=c11 -Iinclude -c src/*.c: ok"
else
  echo "cc -std=c11 -Iinclude -c src/*.c: FAILED"; status=1
fi

echo "compile src/*.c malloc/*.c: $integrator + KBUDDY_WARNINGS; nm: only memcpy/memset/memmove"
printf '%-24s' ""; printf '%-6s' "${levels[@]}"; echo
used_all=""
for tc in "${toolchains[@]}"; do
  IFS='|' read -r name cc nm target <<<"$tc"
  printf '%-24s' "$name"
  if ! command -v "$cc" >/dev/null || ! command -v "$nm" >/dev/null; then
    echo "missing $cc or $nm (scripts/deps.sh check installs them)"; status=1; continue
  fi
  for lvl in "${levels[@]}"; do
    dir="$out/${name// /_}$lvl"
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    if ! (cd "$dir" && "$cc" $integrator $strict $kernel $target "$lvl" -I"$top/include" -I"$top/src" \
            -c "${sources[@]}") >"$dir.log" 2>&1; then
      printf '%-6s' FAIL; status=1
      details+=("$name $lvl: $cc $integrator <KBUDDY_WARNINGS> $target $lvl:"$'\n'"$(grep -E 'error|warning' "$dir.log" | sed "s|$top/||" | awk '!seen[$0]++' | head -n 8)")
      continue
    fi
    used=$(outside_symbols "$nm" "$dir")
    bad=$(echo "$used" | grep -Ev "$allowed" | grep -v '^$' || true)
    if [ -n "$bad" ]; then
      printf '%-6s' NM; status=1
      details+=("$name $lvl: the objects need outside symbols: $(echo "$bad" | tr '\n' ' ')")
    else
      printf '%-6s' ok
      used_all="$used_all $used"
    fi
  done
  echo
done
echo "outside symbols used anywhere: $(echo "$used_all" | tr ' ' '\n' | sort -u | grep -v '^$' | tr '\n' ' ')"

# Code size (issue 13): the .text of the core, src/*.c, as the matrix built
# it at -Os (KBUDDY_SMALL, the default there: include/kbuddy.h), from each
# toolchain's size tool (nm's sibling). The reference is gcc riscv64
# rv64imac, which must stay within KBUDDY_TEXT_MAX bytes (19.5 KiB by
# default; 19,211 bytes when the limit was set, 22,983 before KBUDDY_SMALL).
text_max=${KBUDDY_TEXT_MAX:-19968}
core_objs=()
for src in "$top"/src/*.c; do core_objs+=("$(basename "${src%.c}").o"); done
echo "-Os .text of src/*.c (KBUDDY_SMALL), bytes:"
for tc in "${toolchains[@]}"; do
  IFS='|' read -r name cc nm target <<<"$tc"
  dir="$out/${name// /_}-Os"
  sz=${nm%nm}size
  if ! command -v "$sz" >/dev/null || ! [ -f "$dir/${core_objs[0]}" ]; then
    printf '  %-24s %s\n' "$name" "not measured (no $sz or no -Os build)"
    continue
  fi
  text=$(cd "$dir" && "$sz" "${core_objs[@]}" | awk 'NR > 1 { t += $1 } END { print t }')
  note=""
  if [ "$name" = "gcc riscv64 rv64imac" ]; then
    note="(limit $text_max)"
    if [ "$text" -gt "$text_max" ]; then
      note="over the limit $text_max"; status=1
      details+=("$name -Os: src/ .text is $text bytes, over KBUDDY_TEXT_MAX=$text_max")
    fi
  fi
  printf '  %-24s %6s %s\n' "$name" "$text" "$note"
done
for d in "${details[@]+"${details[@]}"}"; do echo; echo "FAILED: $d"; done
exit $status
