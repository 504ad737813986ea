#!/usr/bin/env bash
# Install what a make target needs, on Debian, and only what is missing.
#
#   scripts/deps.sh GROUP...      GROUP: check (make check), demo (make demo),
#                                 make (just make itself: .ci/run)
#
# Each tool the group needs is looked up on PATH (cargo also in
# ~/.cargo/bin); the missing ones are mapped to Debian packages, and those
# are installed with one `apt-get update` and one `apt-get install`: as
# root directly, else through sudo. A machine that has everything never
# runs apt. When nothing can be installed (no apt-get, not root and no
# sudo, apt failed, or KBUDDY_NO_INSTALL=1) it prints the exact command to
# type and exits 1. Exit 0: every tool is there now.
set -u
cd "$(dirname "$0")/.." || exit 2

# tool -> Debian package (bookworm and later).
declare -A PKG=(
  [make]=make [cc]=build-essential [gcc]=build-essential [cmake]=cmake [pkg-config]=pkgconf
  [clang]=clang [llvm-nm]=llvm [clang-tidy]=clang-tidy [cppcheck]=cppcheck [gcovr]=gcovr
  [riscv64-unknown-elf-gcc]=gcc-riscv64-unknown-elf [riscv64-unknown-elf-nm]=binutils-riscv64-unknown-elf
  [qemu-system-riscv64]=qemu-system-misc
  [python3]=python3 [perl]=perl [git]=git [bc]=bc [cargo]=cargo
)

# What each step of make check uses:
#   builds, tests      make cc gcc cmake
#   sanitizers, fuzz   clang and its runtimes (probed below)
#   coverage, lint     gcovr, cppcheck, clang-tidy
#   freestanding       gcc, clang, llvm-nm, riscv64-unknown-elf-gcc/-nm
#   QEMU demo kernel   riscv64-unknown-elf-gcc, qemu-system-riscv64 (its
#                      OpenSBI firmware comes with it, in qemu-system-data)
#   install test       pkg-config
#   LD_PRELOAD tests   python3, perl, git (skipped when absent: CI must
#                      not skip them), bc
#   rust/ crate        cargo, once the crate exists
tools_for() {
  case $1 in
    make) echo make ;;
    demo) echo make cc riscv64-unknown-elf-gcc qemu-system-riscv64 ;;
    check)
      echo make cc gcc cmake clang llvm-nm clang-tidy cppcheck gcovr riscv64-unknown-elf-gcc \
           riscv64-unknown-elf-nm qemu-system-riscv64 pkg-config python3 perl git bc
      if [ -f rust/Cargo.toml ]; then echo cargo; fi ;;
    *) echo "deps.sh: unknown group '$1' (check, demo, make)" >&2; return 1 ;;
  esac
}

have() {
  command -v "$1" >/dev/null 2>&1 && return 0
  [ "$1" = cargo ] && [ -x "${HOME:-/nonexistent}/.cargo/bin/cargo" ]
}

# clang's sanitizer and libFuzzer runtimes are a separate package: link a
# fuzz target to see whether they are there.
clang_runtimes_ok() {
  local tmp rc
  tmp=$(mktemp -d) || return 1
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' >"$tmp/f.c"
  clang -fsanitize=fuzzer,address,undefined -o "$tmp/f" "$tmp/f.c" >/dev/null 2>&1 &&
    clang -fsanitize=thread -x c -o "$tmp/t" - >/dev/null 2>&1 <<<'int main(void) { return 0; }'
  rc=$?
  rm -rf "$tmp"
  return $rc
}

[ $# -gt 0 ] || set -- check
want=()
for g in "$@"; do
  t=$(tools_for "$g") || exit 2
  # shellcheck disable=SC2206
  want+=($t)
done

missing_tools=() pkgs=()
add_pkg() { local p; for p in "${pkgs[@]+"${pkgs[@]}"}"; do [ "$p" = "$1" ] && return; done; pkgs+=("$1"); }
for t in "${want[@]}"; do
  if ! have "$t"; then missing_tools+=("$t"); add_pkg "${PKG[$t]}"; fi
done
if [[ " ${want[*]} " == *" clang "* ]]; then
  if ! have clang; then
    add_pkg libclang-rt-dev # the runtimes of Debian's default clang, installed with it
  elif ! clang_runtimes_ok; then
    v=$(clang --version 2>/dev/null | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -n 1)
    missing_tools+=("clang's sanitizer runtimes")
    add_pkg "libclang-rt-${v:-}${v:+-}dev"
  fi
fi
[ ${#pkgs[@]} -eq 0 ] && exit 0

echo "kbuddy: missing ${missing_tools[*]}"
echo "kbuddy: Debian packages: ${pkgs[*]}"
apt_opts="-y -q --no-install-recommends"
if [ "$(id -u)" = 0 ]; then
  type_this="apt-get update && apt-get install $apt_opts ${pkgs[*]}"
  sudo=()
else
  type_this="sudo apt-get update && sudo apt-get install $apt_opts ${pkgs[*]}"
  sudo=(sudo)
fi
give_up() {
  echo "kbuddy: $1; install them with:"
  echo "    $type_this"
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "  (as root: su -c 'apt-get update && apt-get install $apt_opts ${pkgs[*]}')"
  fi
  exit 1
}
[ "${KBUDDY_NO_INSTALL:-0}" = 1 ] && give_up "KBUDDY_NO_INSTALL=1: not installing"
command -v apt-get >/dev/null 2>&1 || give_up "no apt-get: not a Debian machine"
[ ${#sudo[@]} -eq 0 ] || command -v sudo >/dev/null 2>&1 || give_up "not root, and no sudo"

echo "kbuddy: installing them: ${sudo[*]+${sudo[*]} }apt-get update; ${sudo[*]+${sudo[*]} }apt-get install ${pkgs[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null ||
  give_up "apt-get update failed"
# shellcheck disable=SC2086
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install $apt_opts "${pkgs[@]}" ||
  give_up "apt-get install failed"

still=()
for t in "${want[@]}"; do have "$t" || still+=("$t"); done
if [[ " ${want[*]} " == *" clang "* ]] && have clang && ! clang_runtimes_ok; then
  still+=("clang's sanitizer runtimes")
fi
[ ${#still[@]} -eq 0 ] || give_up "still missing after the install: ${still[*]}"
echo "kbuddy: installed ${pkgs[*]}"
