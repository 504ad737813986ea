#!/bin/sh
# Instructions per operation of the allocator itself, as bench-workloads.md
# asks: callgrind counts the instructions of one workload loop
# (--toggle-collect=bench_loop_*: region set-up and tear-down are outside it)
# run against kbuddy and against the no-op allocator, and
#   instr/op = (Ir(kbuddy) - Ir(noop)) / ops.
# The loop, the generator and the indirect calls are the same code in both
# runs, so they cancel. Deterministic: the figures do not change from run to
# run (only when the allocator or the compiler does).
#
# Usage: bench/callgrind.sh [path/to/kbuddy_bench]
#   OPS=200000 (default) operations per workload; MARKDOWN=1 for Markdown.
# Without a path it uses build/release/bench/kbuddy_bench, building it first
# if it is missing.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OPS=${OPS:-200000}
BENCH=${1:-$ROOT/build/release/bench/kbuddy_bench}

if [ ! -x "$BENCH" ]; then
    echo "building $BENCH" >&2
    cmake -S "$ROOT" -B "$ROOT/build/release" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$ROOT/build/release" -j2 --target kbuddy_bench >/dev/null
fi
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not found" >&2; exit 2; }

case $BENCH in /*) ;; *) BENCH=$(pwd)/$BENCH ;; esac

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
cd "$TMP" # anything valgrind leaves behind goes with it

# ir WORKLOAD ALLOC [OPS] [PLACEMENT]: instructions executed inside the
# workload's loop (PLACEMENT: the kbuddy heap's, dense by default).
ir() {
    out="$TMP/cg.$1.$2.${4:-dense}"
    ops=${3:-$OPS}
    # The bench exits 1 when a call failed or kbuddy_check (run after the
    # loop, uncounted) found damage: the count stands, but say so.
    rc=0
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='bench_loop_*' \
        --callgrind-out-file="$out" "$BENCH" --only "$1" --ops "$ops" --alloc "$2" \
        --placement "${4:-dense}" \
        >"$TMP/log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        [ -f "$out" ] || { echo "callgrind.sh: $1 $2 failed:" >&2; cat "$TMP/log" >&2; exit 1; }
        echo "callgrind.sh: WARNING: $1 $2 exited $rc:" >&2
        grep -v '^==' "$TMP/log" >&2 || true
        echo 1 >"$TMP/anomaly"
    fi
    n=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out" | head -n 1)
    [ -n "$n" ] || n=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out" | head -n 1)
    [ -n "$n" ] && [ "$n" -gt 0 ] || { echo "callgrind.sh: no count in $out" >&2; exit 1; }
    echo "$n"
}

# per_op IR NOOP_IR: (IR - NOOP_IR) / OPS, one decimal.
per_op() { awk -v a="$1" -v b="$2" -v n="${3:-$OPS}" 'BEGIN { printf "%.1f", (a - b) / n }'; }

for w in W3 W4 F1 F2; do
    eval "noop_$w=\$(ir $w noop)"
    eval "kb_$w=\$(ir $w kbuddy)"
done
# The global allocator (kbuddy_malloc.h) where the bench was built with it:
# its per-thread caches in front of the core heap.
KBM=0
"$BENCH" --only W3 --ops 1 --alloc kbuddy-malloc >/dev/null 2>&1 && KBM=1
for w in W3 W4; do
    eval "kbf_$w=\$(ir $w kbuddy $OPS fast)"
    eval "kbu_$w=\$(ir $w kbuddy-unsized)"
    eval "glibc_$w=\$(ir $w glibc)"
    if [ "$KBM" = 1 ]; then eval "kbm_$w=\$(ir $w kbuddy-malloc)"; fi
done
# W1 and W2 too, for information (no reference figures): W1 per alloc+free
# pair, W2 per operation (--ops is its number of allocations, as many frees).
for w in W1 W2; do
    eval "noop_$w=\$(ir $w noop)"
    eval "kb_$w=\$(ir $w kbuddy)"
    eval "glibc_$w=\$(ir $w glibc)"
done

# W7: instructions per free of the second buddy at each N; flat is the goal.
W7_SIZES="100 1000 10000 50000"
for n in $W7_SIZES; do
    eval "w7kb_$n=\$(ir W7 kbuddy $n)"
    eval "w7noop_$n=\$(ir W7 noop $n)"
done

kb() { eval "per_op \$kb_$1 \$noop_$1"; }
kbu() { eval "per_op \$kbu_$1 \$noop_$1"; }
kbf() { eval "per_op \$kbf_$1 \$noop_$1"; }
kbm() { if [ "$KBM" = 1 ]; then eval "per_op \$kbm_$1 \$noop_$1"; else echo -; fi; }
gl() { eval "per_op \$glibc_$1 \$noop_$1"; }
half() { awk -v x="$1" 'BEGIN { printf "%.1f", x / 2 }'; }

# Reference figures (allocator's own instructions per operation) from
# bench-workloads.md, measured the same way.
if [ "${MARKDOWN:-0}" = 1 ]; then
    echo "| workload | kbuddy | kbuddy fast placement | kbuddy (unsized free) | kbuddy_malloc | glibc (here) | o1heap | buddy_system_allocator | TLSF | glibc (ref) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    echo "| W3 random | $(kb W3) | $(kbf W3) | $(kbu W3) | $(kbm W3) | $(gl W3) | 65 | 124 | 140 | 198 |"
    echo "| W4 random-aligned | $(kb W4) | $(kbf W4) | $(kbu W4) | $(kbm W4) | $(gl W4) | 69 | 135 | 213 | 426 |"
    echo "| F1 frames | $(kb F1) | - | - | - | - | - | - | - | - |"
    echo "| F2 frames-mixed | $(kb F2) | - | - | - | - | - | - | - | - |"
    echo "| W1 pair (per alloc+free) | $(kb W1) | - | - | - | $(gl W1) | - | - | - | - |"
    echo "| W2 batch | $(half "$(kb W2)") | - | - | - | $(half "$(gl W2)") | - | - | - | - |"
else
    echo "callgrind: instructions per operation, allocator's own (minus the no-op loop), $OPS ops"
    fmt="%-18s %8s %8s %10s %9s %9s   %6s %6s %6s %6s\n"
    printf "$fmt" workload kbuddy kb-fast kb-unsized kb-malloc glibc o1heap bsa TLSF glibc
    printf "$fmt" "" "" "" "" "" "(here)" "(ref)" "(ref)" "(ref)" "(ref)"
    printf "$fmt" "W3 random" "$(kb W3)" "$(kbf W3)" "$(kbu W3)" "$(kbm W3)" "$(gl W3)" 65 124 140 198
    printf "$fmt" "W4 random-aligned" "$(kb W4)" "$(kbf W4)" "$(kbu W4)" "$(kbm W4)" "$(gl W4)" 69 135 213 426
    printf "$fmt" "F1 frames" "$(kb F1)" - - - - - - - -
    printf "$fmt" "F2 frames-mixed" "$(kb F2)" - - - - - - - -
    printf "$fmt" "W1 pair (a+f)" "$(kb W1)" - - - "$(gl W1)" - - - -
    printf "$fmt" "W2 batch" "$(half "$(kb W2)")" - - - "$(half "$(gl W2)")" - - - -
    echo "kbuddy frees with kbuddy_free_sized, kb-unsized with kbuddy_free;"
    echo "kb-fast = kbuddy with kbuddy_set_placement(KBUDDY_PLACE_FAST), sized frees;"
    echo "kb-malloc = kbm_malloc/kbm_free_sized (kbuddy_malloc.h: per-thread caches over the core heap);"
    echo "bsa = Rust buddy_system_allocator 0.11; (ref) figures from bench-workloads.md."
    echo "raw Ir: W3 kbuddy=$kb_W3 noop=$noop_W3; W4 kbuddy=$kb_W4 noop=$noop_W4;" \
         "F1 kbuddy=$kb_F1 noop=$noop_F1; F2 kbuddy=$kb_F2 noop=$noop_F2"
fi
w7line=""
w7min=""
w7max=""
for n in $W7_SIZES; do
    v=$(eval "per_op \$w7kb_$n \$w7noop_$n $n")
    w7line="$w7line N=$n: $v"
    w7min=$(awk -v a="$v" -v m="${w7min:-$v}" 'BEGIN { print (a < m ? a : m) }')
    w7max=$(awk -v a="$v" -v m="${w7max:-$v}" 'BEGIN { print (a > m ? a : m) }')
done
w7ratio=$(awk -v a="$w7max" -v b="$w7min" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
if [ "${MARKDOWN:-0}" = 1 ]; then
    echo
    echo "W7 kbuddy instructions per free:$w7line (max/min $w7ratio)"
else
    echo "W7 dealloc-scan, kbuddy instructions per free:$w7line; max/min $w7ratio"
fi

if [ -f "$TMP/anomaly" ]; then
    echo "WARNING: some runs reported anomalies (see above); the counts are still the loops' own." >&2
    exit 3
fi
