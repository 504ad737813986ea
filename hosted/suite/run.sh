#!/usr/bin/env bash
# The allocator benchmark suite: every program under glibc, jemalloc,
# mimalloc and kbuddy (LD_PRELOAD), runs interleaved (each repetition runs
# every program under every allocator in turn, so a slow spell of the
# machine hits them all alike), and a Markdown table of the median wall
# time and the median peak RSS of each, as ratios to glibc's, with their
# geometric means. A run whose output differs from glibc's (each program
# prints a checksum of the data it wrote and verified) or that fails is
# reported as FAIL, left out of the means, and makes the script exit 1.
#
#   run.sh BUILD_DIR [N=5] [quick|full=full]     the table
#   run.sh --check LIBRARY PROGRAM               quick mode under glibc and
#                                                LIBRARY: same output (ctest)
#
# BUILD_DIR: the CMake build with hosted/libkbuddy-malloc.so and
# hosted/suite/suite_*. JEMALLOC_SO / MIMALLOC_SO override the libraries
# found; one not found is skipped with a note. Peak RSS: /usr/bin/time -f
# %M (Debian package "time"). Run it on an otherwise quiet machine, with
# nice if others share it; it holds at most a few hundred MiB at a time.
set -u

if [ "${1:-}" = --check ]; then
  lib=$2 prog=$3
  ref=$("$prog" --quick) || { echo "FAIL: $prog under glibc"; exit 1; }
  got=$(LD_PRELOAD=$lib "$prog" --quick) || { echo "FAIL: $prog under $lib"; exit 1; }
  echo "glibc:   $ref"
  echo "library: $got"
  [ "$ref" = "$got" ] || { echo "FAIL: outputs differ"; exit 1; }
  exit 0
fi

build=${1:?usage: run.sh BUILD_DIR [N] [quick|full]}
reps=${2:-5}
mode=${3:-full}
build=$(cd "$build" && pwd)
flag=; [ "$mode" = quick ] && flag=--quick

find_so() { # $1: library file name (e.g. libjemalloc.so.2)
  local c
  for c in $(ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n { print $NF }') \
           /usr/lib/*-linux-gnu/"$1" /usr/lib64/"$1" /usr/lib/"$1" /usr/local/lib/"$1"; do
    [ -r "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

names=(glibc) libs=("")
add() { # name, path or empty
  if [ -n "$2" ] && [ -r "$2" ]; then names+=("$1"); libs+=("$2")
  else echo "note: $1 not found, skipped" >&2; fi
}
add jemalloc "${JEMALLOC_SO:-$(find_so libjemalloc.so.2)}"
add mimalloc "${MIMALLOC_SO:-$(find_so libmimalloc.so.2)}"
add kbuddy "$build/hosted/libkbuddy-malloc.so"

progs=(cfrac espresso barnes larson xmalloc_test cache_scratch cache_thrash mstress rptest
       malloc_large glibc_simple glibc_thread)
for p in "${progs[@]}"; do
  [ -x "$build/hosted/suite/suite_$p" ] || { echo "missing $build/hosted/suite/suite_$p" >&2; exit 2; }
done
timer=/usr/bin/time
[ -x $timer ] || { echo "note: /usr/bin/time missing (apt-get install time): no RSS" >&2; timer=; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

run_one() { # prog, allocator index
  local p=$1 i=$2 exe=$build/hosted/suite/suite_$1 out t0 t1 rc
  local key=$work/$p.${names[$i]}
  t0=$(date +%s%N)
  if [ -n "$timer" ]; then
    out=$(LD_PRELOAD=${libs[$i]} $timer -f %M -o "$key.m" "$exe" $flag 2>"$key.err")
  else
    out=$(LD_PRELOAD=${libs[$i]} "$exe" $flag 2>"$key.err")
  fi
  rc=$?
  t1=$(date +%s%N)
  if [ $rc -ne 0 ] || { [ -f "$work/$p.ref" ] && [ "$out" != "$(cat "$work/$p.ref")" ]; }; then
    echo "FAIL: $p under ${names[$i]} (exit $rc): $out $(head -c 300 "$key.err")" >&2
    touch "$key.fail"
    status=1
    return
  fi
  [ -f "$work/$p.ref" ] || echo "$out" > "$work/$p.ref"
  echo $(( (t1 - t0) / 1000 )) >> "$key.t"          # microseconds
  [ -n "$timer" ] && tail -n 1 "$key.m" >> "$key.rss" # KiB
}

echo "suite: $mode mode, $reps interleaved runs, allocators: ${names[*]}" >&2
for ((r = 1; r <= reps; r++)); do
  for p in "${progs[@]}"; do
    for i in "${!names[@]}"; do
      # glibc first in the first repetition: its output is the reference
      run_one "$p" "$i"
    done
  done
  echo "  run $r of $reps done" >&2
done

median() { [ -s "$1" ] && sort -g "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

hdr="| program | glibc time s | glibc peak RSS MiB |"
sep="| --- | ---: | ---: |"
for n in "${names[@]:1}"; do hdr+=" $n time | $n RSS |"; sep+=" ---: | ---: |"; done
echo
echo "$hdr"
echo "$sep"
declare -A lt lr cnt
for p in "${progs[@]}"; do
  gt=$(median "$work/$p.glibc.t") gr=$(median "$work/$p.glibc.rss")
  if [ -z "$gt" ]; then echo "| ${p//_/-} | FAIL | FAIL |"; continue; fi
  row="| ${p//_/-} | $(awk -v t="$gt" 'BEGIN { printf "%.3f", t / 1e6 }') | $(awk -v m="${gr:-0}" 'BEGIN { printf "%.1f", m / 1024 }') |"
  for n in "${names[@]:1}"; do
    t=$(median "$work/$p.$n.t") m=$(median "$work/$p.$n.rss")
    if [ -e "$work/$p.$n.fail" ] || [ -z "$t" ]; then row+=" FAIL | FAIL |"; continue; fi
    rt=$(awk -v a="$t" -v b="$gt" 'BEGIN { printf "%.2f", a / b }')
    rr=$(awk -v a="${m:-0}" -v b="${gr:-1}" 'BEGIN { printf "%.2f", a / b }')
    row+=" $rt | $rr |"
    lt[$n]=$(awk -v s="${lt[$n]:-0}" -v x="$rt" 'BEGIN { print s + log(x) }')
    lr[$n]=$(awk -v s="${lr[$n]:-0}" -v x="$rr" 'BEGIN { print s + log(x) }')
    cnt[$n]=$(( ${cnt[$n]:-0} + 1 ))
  done
  echo "$row"
done
row="| geometric mean | 1 | 1 |"
for n in "${names[@]:1}"; do
  if [ "${cnt[$n]:-0}" -gt 0 ]; then
    row+=" $(awk -v s="${lt[$n]}" -v c="${cnt[$n]}" 'BEGIN { printf "%.2f", exp(s / c) }') |"
    row+=" $(awk -v s="${lr[$n]}" -v c="${cnt[$n]}" 'BEGIN { printf "%.2f", exp(s / c) }') |"
  else row+=" n/a | n/a |"; fi
done
echo "$row"
echo
echo "Ratios to glibc (lower is better): median wall time and median peak RSS of $reps interleaved runs, $mode mode."
exit $status
