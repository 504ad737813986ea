#!/usr/bin/env bash
# The multi-threaded benchmark table: kbuddy_bench_mt (W3 per thread and
# producer-consumer, at 1 and 2 threads) under glibc, jemalloc, mimalloc and
# libkbuddy-malloc.so (each through LD_PRELOAD of the same binary), and the
# wall time of one real program (hosted/tests/alloc_heavy.py with
# PYTHONMALLOC=malloc) under each.
#
#   hosted/bench_mt.sh [BUILD_DIR [REPS]]     (default build/release, 5)
#
# Figures are medians of REPS rounds (each after a warm-up round; a round
# runs 1 and then 2 threads, so the two see the same machine); 2T/1T is the
# median of the rounds' ratios. "cpu" columns divide by the busiest
# thread's CPU time instead of wall time: on a machine shared with other
# work (see the load average printed) they are the steadier figure. The
# "control" column is W3's loop without an allocator (a stack private to
# each thread) run in the same process just after: its 2T/1T is what the
# machine allowed any allocator at that time.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build/release}
reps=${2:-5}
bench=$build/hosted/kbuddy_bench_mt
kb=$build/hosted/libkbuddy-malloc.so
[ -x "$bench" ] && [ -f "$kb" ] || { echo "build first: $bench, $kb missing"; exit 1; }
libdir=/usr/lib/x86_64-linux-gnu
python=$(command -v /usr/bin/python3 || command -v python3)

names=(glibc jemalloc mimalloc kbuddy)
libs=("" "$libdir/libjemalloc.so.2" "$libdir/libmimalloc.so.2" "$kb")

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A R
for i in "${!names[@]}"; do
  n=${names[$i]} lib=${libs[$i]}
  if [ -n "$lib" ] && [ ! -f "$lib" ]; then echo "$n: $lib missing, skipped"; continue; fi
  out=$(LD_PRELOAD=$lib "$bench" --reps "$reps")
  echo "--- $n"; echo "$out"
  while read -r w t _ o y _ _ c; do
    if [ "$t" = ratio ]; then
      R[$n,$w,ratio]=${o#wall=}
      R[$n,$w,ratio,cpu]=${y#cpu=}
      continue
    fi
    R[$n,$w,${t#threads=}]=${o#ops_per_s=}
    R[$n,$w,${t#threads=},cpu]=${c#cpu_ops_per_s=}
  done <<< "$out"
  times=()
  for _ in $(seq "$reps"); do
    s=$( { /usr/bin/time -f '%e %U' env PYTHONMALLOC=malloc LD_PRELOAD="$lib" "$python" \
             "$here/tests/alloc_heavy.py" > /dev/null; } 2>&1 | tail -n 1)
    times+=("$s")
  done
  R[$n,py]=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (reps + 1) / 2 ))p")
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

m() { awk -v x="$1" 'BEGIN { printf "%.1f", x / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "| allocator | W3 1T Mops/s | W3 2T Mops/s | W3 2T/1T | W3 2T/1T (cpu) | PC 1T Mops/s | PC 2T Mops/s | PC 2T/1T (cpu) | W3 1T ns/op | control 2T/1T (cpu) | python wall s (user s) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for n in "${names[@]}"; do
  [ -n "${R[$n,W3,1]:-}" ] || continue
  read -r pw pu <<< "${R[$n,py]}"
  echo "| $n | $(m "${R[$n,W3,1]}") | $(m "${R[$n,W3,2]}") | ${R[$n,W3,ratio]} |" \
       "${R[$n,W3,ratio,cpu]} | $(m "${R[$n,PC,1]}") | $(m "${R[$n,PC,2]}") |" \
       "${R[$n,PC,ratio,cpu]} |" \
       "$(awk -v x="${R[$n,W3,1]}" 'BEGIN { printf "%.1f", 1e9 / x }') |" \
       "${R[$n,CTL,ratio]} (${R[$n,CTL,ratio,cpu]}) | $pw ($pu) |"
done
