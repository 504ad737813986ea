#!/usr/bin/env bash
# shellcheck disable=SC2016  # the stubs are written with $ left for them to expand
# scripts/deps.sh on a pretend machine: a PATH of stubs, where apt-get and
# sudo only write down how they were called (and "install" stub tools), and
# id says who we are. Checks, exactly: nothing present-and-complete ever
# reaches apt; what is missing is installed with one update and one install
# of exactly the right packages, as root or through sudo; without root or
# sudo, or without apt, or when apt fails, it stops with the command to type.
set -u
real_bash=$BASH
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0 tests=0

check_tools="make cc gcc cmake clang llvm-nm clang-tidy cppcheck gcovr riscv64-unknown-elf-gcc
             riscv64-unknown-elf-nm qemu-system-riscv64 pkg-config python3 perl git bc"
# package: the tools it brings (the stub apt-get "installs" them).
provides_table="build-essential make cc gcc
pkgconf pkg-config
llvm llvm-nm
gcc-riscv64-unknown-elf riscv64-unknown-elf-gcc riscv64-unknown-elf-nm
binutils-riscv64-unknown-elf riscv64-unknown-elf-nm
qemu-system-misc qemu-system-riscv64
clang clang
clang-tidy clang-tidy
cppcheck cppcheck
gcovr gcovr
python3 python3
perl perl
git git
bc bc
cargo cargo"

stub() { # name body
  printf '#!%s\n%s\n' "$real_bash" "$2" >"$sb/bin/$1"; chmod +x "$sb/bin/$1"
}
tool_stub() { # a present tool; clang fails sanitizer links while "rt-missing" exists
  stub "$1" 'case " $* " in
  *" --version "*) echo "Debian clang version 14.0.6" ;;
  *-fsanitize*) [ -e "'"$sb"'/rt-missing" ] && exit 1 ;;
esac
exit 0'
}

# A fresh pretend machine: the repository's deps.sh, the given tools present.
machine() { # uid tools...
  sb=$work/m$tests
  mkdir -p "$sb/bin" "$sb/repo/scripts" "$sb/home"
  cp "$top/scripts/deps.sh" "$sb/repo/scripts/"
  for t in bash env dirname mktemp rm sed head cat chmod; do ln -s "$(command -v $t)" "$sb/bin/$t"; done
  echo "$1" >"$sb/uid"; shift
  stub id 'cat '"$sb"'/uid'
  local t; for t in "$@"; do tool_stub "$t"; done
  : >"$sb/log"
}
with_apt() {
  echo "$provides_table" >"$sb/provides"
  stub apt-get 'echo "uid=$(id -u) apt-get $*" >>'"$sb"'/log
[ -e '"$sb"'/apt-fails ] && exit 100
[ "$1" = install ] || exit 0
for p in "$@"; do
  case $p in libclang-rt-*) rm -f '"$sb"'/rt-missing ;; esac
  while read -r pkg tools; do
    [ "$pkg" = "$p" ] || continue
    for t in $tools; do printf "#!%s\nexit 0\n" "'"$real_bash"'" >'"$sb"'/bin/$t; chmod +x '"$sb"'/bin/$t; done
  done <'"$sb"'/provides
done'
}
with_sudo() {
  stub sudo 'echo "sudo $*" >>'"$sb"'/log; echo 0 >'"$sb"'/uid; "$@"; rc=$?; echo '"$(cat "$sb/uid")"' >'"$sb"'/uid; exit $rc'
}
run_deps() { # group...
  (cd "$sb" && PATH=$sb/bin HOME=$sb/home "$real_bash" "$sb/repo/scripts/deps.sh" "$@") >"$sb/out" 2>&1
  echo $? >"$sb/rc"
}
expect() { # description, expected rc, expected log (exact), output pattern (grep -E; "" = no output)
  tests=$((tests + 1))
  local rc log out_ok=1; rc=$(cat "$sb/rc"); log=$(cat "$sb/log")
  if [ -z "$4" ]; then [ -s "$sb/out" ] && out_ok=0; else grep -qE -- "$4" "$sb/out" || out_ok=0; fi
  if [ "$rc" != "$2" ] || [ "$log" != "$3" ] || [ $out_ok = 0 ]; then
    failures=$((failures + 1))
    echo "FAIL: $1"; echo "  exit $rc (want $2)"; echo "  apt log:"; sed 's/^/    /' "$sb/log"
    echo "  want:"; echo "$3" | sed 's/^/    /'; echo "  output (want /$4/):"; sed 's/^/    /' "$sb/out"
  else
    echo "ok: $1"
  fi
}
opts="-y -q --no-install-recommends"

# shellcheck disable=SC2086
{
machine 0 $check_tools; with_apt; run_deps check
expect "everything present: apt is never called, nothing printed" 0 "" ''

machine 0 $check_tools; with_apt; rm "$sb/bin/clang" "$sb/bin/qemu-system-riscv64" "$sb/bin/bc"; run_deps check
expect "root, clang, qemu and bc missing: one update, one install of exactly their packages" 0 \
"uid=0 apt-get update -q
uid=0 apt-get install $opts clang qemu-system-misc bc libclang-rt-dev" 'installed clang qemu-system-misc bc libclang-rt-dev'

machine 1000 $check_tools; with_apt; with_sudo; rm "$sb/bin/gcovr" "$sb/bin/riscv64-unknown-elf-gcc" "$sb/bin/riscv64-unknown-elf-nm"
run_deps check
expect "not root, sudo there: everything through sudo, as root" 0 \
"sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
uid=0 apt-get update -q
sudo env DEBIAN_FRONTEND=noninteractive apt-get install $opts gcovr gcc-riscv64-unknown-elf binutils-riscv64-unknown-elf
uid=0 apt-get install $opts gcovr gcc-riscv64-unknown-elf binutils-riscv64-unknown-elf" \
'installed gcovr gcc-riscv64-unknown-elf binutils-riscv64-unknown-elf'

machine 1000 $check_tools; with_apt; rm "$sb/bin/cppcheck" "$sb/bin/pkg-config"; run_deps check
expect "not root, no sudo: nothing run, the exact command printed" 1 "" \
"^    sudo apt-get update && sudo apt-get install $opts cppcheck pkgconf\$"
grep -q "su -c 'apt-get update && apt-get install $opts cppcheck pkgconf'" "$sb/out" ||
  { echo "FAIL: no su -c alternative"; failures=$((failures + 1)); }

machine 0 $check_tools; rm "$sb/bin/make"; run_deps make
expect "no apt-get (not Debian): stop with the command" 1 "" "no apt-get.*|apt-get install $opts make\$"

machine 0 $check_tools; with_apt; touch "$sb/apt-fails"; rm "$sb/bin/git"; run_deps check
expect "apt fails: exit 1 with the command" 1 "uid=0 apt-get update -q" "apt-get update failed"

machine 0 $check_tools; with_apt; touch "$sb/rt-missing"; run_deps check
expect "clang without its sanitizer runtimes: the runtimes of that clang's version" 0 \
"uid=0 apt-get update -q
uid=0 apt-get install $opts libclang-rt-14-dev" "missing clang's sanitizer runtimes"

machine 0 $check_tools; with_apt; rm "$sb/bin/python3"; KBUDDY_NO_INSTALL=1 run_deps check
expect "KBUDDY_NO_INSTALL=1: only the command" 1 "" "apt-get install $opts python3\$"

machine 0 make cc; with_apt; run_deps demo
expect "make demo: the cross compiler and QEMU, nothing else" 0 \
"uid=0 apt-get update -q
uid=0 apt-get install $opts gcc-riscv64-unknown-elf qemu-system-misc" 'installed'

machine 0 $check_tools; with_apt; mkdir -p "$sb/repo/rust"; touch "$sb/repo/rust/Cargo.toml"; run_deps check
expect "rust/ crate, no cargo: cargo" 0 "uid=0 apt-get update -q
uid=0 apt-get install $opts cargo" 'installed cargo'

machine 0 $check_tools; with_apt; mkdir -p "$sb/repo/rust" "$sb/home/.cargo/bin"; touch "$sb/repo/rust/Cargo.toml"
tool_stub cargo; mv "$sb/bin/cargo" "$sb/home/.cargo/bin/cargo"; run_deps check
expect "rust/ crate, cargo in ~/.cargo/bin: nothing to do" 0 "" ''
}

echo "deps.sh: $((tests - failures)) of $tests cases passed"
[ $failures -eq 0 ]
