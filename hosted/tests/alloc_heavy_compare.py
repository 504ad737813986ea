#!/usr/bin/env python3
"""Time alloc_heavy.py under glibc and under LD_PRELOAD libraries, interleaved.

Usage: alloc_heavy_compare.py ROUNDS LIB [LIB ...]
       (env PYTHON=/usr/bin/python3, SCRIPT=alloc_heavy.py beside this file)

Each round runs the script once under glibc and once under each library
(PYTHONMALLOC=malloc, as the preload test runs it), the order reversed every
other round so that a drift in the machine's load falls on both sides. Wall
time, user time and peak RSS come from wait4 of each child. Prints every run,
then per allocator the medians and the median of the rounds' ratios to glibc:
on a shared machine single runs move by 5-10%, the ratios of runs taken
side by side much less.
"""
import os
import statistics
import subprocess
import sys
import time


def run(python, script, lib):
    env = dict(os.environ, PYTHONMALLOC="malloc")
    env.pop("LD_PRELOAD", None)
    if lib:
        env["LD_PRELOAD"] = lib
    t0 = time.monotonic()
    proc = subprocess.Popen([python, script], env=env, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    if status != 0:
        sys.exit(f"{lib or 'glibc'}: exit status {status}")
    return wall, ru.ru_utime, ru.ru_maxrss / 1024.0


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    libs = [os.path.abspath(p) for p in sys.argv[2:]]
    here = os.path.dirname(os.path.abspath(__file__))
    python = os.environ.get("PYTHON", "/usr/bin/python3")
    script = os.environ.get("SCRIPT", os.path.join(here, "alloc_heavy.py"))
    names = ["glibc"] + libs
    res = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            w, u, m = run(python, script, None if n == "glibc" else n)
            res[n].append((w, u, m))
            print(f"round {r} {n}: wall {w:.2f} s user {u:.2f} s peak {m:.1f} MB", flush=True)
    print()
    g = res["glibc"]
    for n in names:
        v = res[n]
        med = [statistics.median(x[i] for x in v) for i in range(3)]
        line = f"{n}: median wall {med[0]:.2f} s user {med[1]:.2f} s peak RSS {med[2]:.1f} MB"
        if n != "glibc":
            ratio = [statistics.median(v[j][i] / g[j][i] for j in range(rounds)) for i in range(3)]
            line += f"; median ratio to glibc wall {ratio[0]:.3f} user {ratio[1]:.3f} RSS {ratio[2]:.3f}"
        print(line)


if __name__ == "__main__":
    main()
