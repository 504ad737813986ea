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
    cmake --build "$ROOT/build/release" -j2 --target kbuddy_bench kbuddy_bench_hooks >/dev/null
fi
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not found" >&2; exit 2; }

case $BENCH in /*) ;; *) BENCH=$(pwd)/$BENCH ;; esac

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
cd "$TMP" # anything valgrind leaves behind goes with it

# ir WORKLOAD ALLOC [OPS] [PLACEMENT] [--lock]: instructions executed inside
# the workload's loop (PLACEMENT: the kbuddy heap's, dense by default;
# --lock: the heap with the built-in spinlock installed).
ir() {
    out="$TMP/cg.$1.$2.${4:-dense}${5:-}"
    ops=${3:-$OPS}
    # The bench exits 1 when a call failed or kbuddy_check (run after the
    # loop, uncounted) found damage: the count stands, but say so.
    rc=0
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='bench_loop_*' \
        --callgrind-out-file="$out" "$BENCH" --only "$1" --ops "$ops" --alloc "$2" \
        --placement "${4:-dense}" ${5:-} \
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
# The global allocator (kbuddy_malloc.h) where the bench was built with it,
# in its kernel configuration (per-CPU caches, one CPU, built-in spinlock):
# kbm without hooks, kbm-hooks with cpu_id and interrupt hooks installed,
# kbm-hooks-unmasked the same with cpu_id_unmasked set.
KBM=0
"$BENCH" --only W3 --ops 1 --alloc kbm >/dev/null 2>&1 && KBM=1
for w in W3 W4; do
    eval "kbf_$w=\$(ir $w kbuddy $OPS fast)"
    eval "kbl_$w=\$(ir $w kbuddy $OPS dense --lock)"
    eval "kbu_$w=\$(ir $w kbuddy-unsized)"
    eval "glibc_$w=\$(ir $w glibc)"
done
# W1 per alloc+free pair, W2 per operation (--ops is its number of
# allocations, as many frees).
for w in W1 W2; do
    eval "noop_$w=\$(ir $w noop)"
    eval "kb_$w=\$(ir $w kbuddy)"
    eval "glibc_$w=\$(ir $w glibc)"
done
# kbuddy_bench_hooks (beside the bench): the same layer built with
# compile-time hooks (bench/kbm_bench_hooks.h), as a kernel inlines them.
HOOKS_BENCH=$(dirname "$BENCH")/kbuddy_bench_hooks
KBMI=0
[ "$KBM" = 1 ] && [ -x "$HOOKS_BENCH" ] && KBMI=1
if [ "$KBM" = 1 ]; then
    for w in W1 W2 W3 W4; do
        eval "kbm_$w=\$(ir $w kbm)"
        eval "kbmh_$w=\$(ir $w kbm-hooks)"
        eval "kbmu_$w=\$(ir $w kbm-hooks-unmasked)"
        if [ "$KBMI" = 1 ]; then eval "kbmi_$w=\$(BENCH=\$HOOKS_BENCH ir $w kbm)"; fi
    done
    # W5 is no instruction count: peak utilisation in percent (deterministic).
    w5_kb=$("$BENCH" --only W5 --alloc kbuddy | sed -n 's/.*peak=\([0-9.]*\)%.*/\1/p')
    w5_kbm=$("$BENCH" --only W5 --alloc kbm | sed -n 's/.*peak=\([0-9.]*\)%.*/\1/p')
fi

# W7: instructions per free of the second buddy at each N; flat is the goal.
W7_SIZES="100 1000 10000 50000"
for n in $W7_SIZES; do
    eval "w7kb_$n=\$(ir W7 kbuddy $n)"
    eval "w7noop_$n=\$(ir W7 noop $n)"
done

kb() { eval "per_op \$kb_$1 \$noop_$1"; }
kbu() { eval "per_op \$kbu_$1 \$noop_$1"; }
kbf() { eval "per_op \$kbf_$1 \$noop_$1"; }
kbl() { eval "per_op \$kbl_$1 \$noop_$1"; }
kbm() { if [ "$KBM" = 1 ]; then eval "per_op \$kbm_$1 \$noop_$1"; else echo -; fi; }
kbmh() { if [ "$KBM" = 1 ]; then eval "per_op \$kbmh_$1 \$noop_$1"; else echo -; fi; }
kbmu() { if [ "$KBM" = 1 ]; then eval "per_op \$kbmu_$1 \$noop_$1"; else echo -; fi; }
# W2 is counted per allocation (--ops allocations and as many frees): halve.
kbm2() { if [ "$KBM" = 1 ]; then half "$(eval "per_op \$kbm_W2 \$noop_W2")"; else echo -; fi; }
kbmh2() { if [ "$KBM" = 1 ]; then half "$(eval "per_op \$kbmh_W2 \$noop_W2")"; else echo -; fi; }
kbmu2() { if [ "$KBM" = 1 ]; then half "$(eval "per_op \$kbmu_W2 \$noop_W2")"; else echo -; fi; }
kbmi() { if [ "$KBMI" = 1 ]; then eval "per_op \$kbmi_$1 \$noop_$1"; else echo -; fi; }
kbmi2() { if [ "$KBMI" = 1 ]; then half "$(eval "per_op \$kbmi_W2 \$noop_W2")"; else echo -; fi; }
gl() { eval "per_op \$glibc_$1 \$noop_$1"; }
half() { awk -v x="$1" 'BEGIN { printf "%.1f", x / 2 }'; }

# Reference figures (allocator's own instructions per operation) from
# bench-workloads.md, measured the same way.
if [ "${MARKDOWN:-0}" = 1 ]; then
    echo "| workload | kbuddy | kbuddy (unsized free) | kbm | kbm + inline hooks | kbm + hook pointers | kbm + hook pointers, unmasked | glibc (here) | o1heap | buddy_system_allocator | TLSF | glibc (ref) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    echo "| W1 pair (per alloc+free) | $(kb W1) | - | $(kbm W1) | $(kbmi W1) | $(kbmh W1) | $(kbmu W1) | $(gl W1) | 175 | 401 | 340 | 133 |"
    echo "| W2 batch | $(half "$(kb W2)") | - | $(kbm2) | $(kbmi2) | $(kbmh2) | $(kbmu2) | $(half "$(gl W2)") | 90 | 67 | 171 | 97 |"
    echo "| W3 random | $(kb W3) | $(kbu W3) | $(kbm W3) | $(kbmi W3) | $(kbmh W3) | $(kbmu W3) | $(gl W3) | 65 | 124 | 140 | 198 |"
    echo "| W4 random-aligned | $(kb W4) | $(kbu W4) | $(kbm W4) | $(kbmi W4) | $(kbmh W4) | $(kbmu W4) | $(gl W4) | 69 | 135 | 213 | 426 |"
    echo "| W5 peak utilisation % | ${w5_kb:--} | - | ${w5_kbm:--} | - | - | - | n/a | 73.2 | 74.9 | 98.6 | n/a |"
    echo "| F1 frames | $(kb F1) | - | - | - | - | - | - | - | - | - | - |"
    echo "| F2 frames-mixed | $(kb F2) | - | - | - | - | - | - | - | - | - | - |"
    echo
    echo "kbuddy with fast placement (kbuddy_set_placement(KBUDDY_PLACE_FAST)): W3 $(kbf W3), W4 $(kbf W4)."
    echo "kbuddy with the built-in spinlock installed (kbuddy_set_lock, KBUDDY_SPINLOCK_HOOK): W3 $(kbl W3), W4 $(kbl W4)."
else
    echo "callgrind: instructions per operation, allocator's own (minus the no-op loop), $OPS ops"
    fmt="%-18s %8s %10s %8s %9s %9s %9s %9s   %6s %6s %6s %6s\n"
    printf "$fmt" workload kbuddy kb-unsized kbm kbm+ihook kbm+hook kbm+uhook glibc o1heap bsa TLSF glibc
    printf "$fmt" "" "" "" "" "" "" "" "(here)" "(ref)" "(ref)" "(ref)" "(ref)"
    printf "$fmt" "W1 pair (a+f)" "$(kb W1)" - "$(kbm W1)" "$(kbmi W1)" "$(kbmh W1)" "$(kbmu W1)" "$(gl W1)" 175 401 340 133
    printf "$fmt" "W2 batch" "$(half "$(kb W2)")" - "$(kbm2)" "$(kbmi2)" "$(kbmh2)" "$(kbmu2)" "$(half "$(gl W2)")" 90 67 171 97
    printf "$fmt" "W3 random" "$(kb W3)" "$(kbu W3)" "$(kbm W3)" "$(kbmi W3)" "$(kbmh W3)" "$(kbmu W3)" "$(gl W3)" 65 124 140 198
    printf "$fmt" "W4 random-aligned" "$(kb W4)" "$(kbu W4)" "$(kbm W4)" "$(kbmi W4)" "$(kbmh W4)" "$(kbmu W4)" "$(gl W4)" 69 135 213 426
    printf "$fmt" "W5 peak util. %" "${w5_kb:--}" - "${w5_kbm:--}" - - - n/a 73.2 74.9 98.6 n/a
    printf "$fmt" "F1 frames" "$(kb F1)" - - - - - - - - - -
    printf "$fmt" "F2 frames-mixed" "$(kb F2)" - - - - - - - - - -
    echo "kbuddy with fast placement (kbuddy_set_placement(KBUDDY_PLACE_FAST)): W3 $(kbf W3), W4 $(kbf W4)"
    echo "kbuddy with the built-in spinlock installed (kbuddy_set_lock, KBUDDY_SPINLOCK_HOOK): W3 $(kbl W3), W4 $(kbl W4)"
    echo "kbuddy frees with kbuddy_free_sized, kb-unsized with kbuddy_free; kbm = the global"
    echo "allocator (kbuddy_malloc.h) in its kernel configuration, one CPU, built-in spinlock:"
    echo "kbm_malloc/kbm_aligned_alloc, kbm_free_sized/kbm_free_aligned_sized; kbm+ihook the same"
    echo "with compile-time cpu_id and interrupt hooks (kbuddy_bench_hooks), kbm+hook with"
    echo "function-pointer hooks installed, kbm+uhook the same with cpu_id_unmasked set."
    echo "W2 per operation (half a pair)."
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
