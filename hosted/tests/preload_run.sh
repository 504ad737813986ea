#!/usr/bin/env bash
# Run a real program with and without libkbuddy-malloc.so preloaded and
# compare: the output must be the same, the library must say (through
# KBUDDY_MALLOC_STATS=file, one line per process at exit) that it served
# the program, and it must not have reported a bad free (on stderr). Only the program under
# test (and the processes it starts) gets the library.
#
#   preload_run.sh LIBRARY KIND PROGRAM
# KIND: python | perl | sort | git | threads
set -u
lib=$1 kind=$2 prog=$3
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
P=() # the prefix that preloads, empty for the reference run

case $kind in
  python)
    run() { PYTHONMALLOC=malloc "${P[@]}" "$prog" "$here/alloc_heavy.py"; } ;;
  perl)
    run() { "${P[@]}" "$prog" "$here/alloc_heavy.pl"; } ;;
  sort)
    # 1,000,000 lines (27 MB); GNU sort sorts them with 4 threads.
    awk 'BEGIN { srand(7); for (i = 0; i < 1000000; i++)
                   printf "%08d %s line %d\n", int(rand() * 1e8), substr("abcdefghij", 1 + i % 10), i }' \
      > input.txt
    run() {
      "${P[@]}" "$prog" --parallel=4 -S 64M input.txt | md5sum
      "${P[@]}" "$prog" -k2,2 -k1,1n -s input.txt | tail -n 3
    } ;;
  git)
    # 300 files in 10 directories, three commits, a gc and an fsck, with
    # fixed identities and dates so that every hash is reproducible.
    export GIT_AUTHOR_NAME=k GIT_AUTHOR_EMAIL=k@example.com GIT_COMMITTER_NAME=k \
           GIT_COMMITTER_EMAIL=k@example.com GIT_AUTHOR_DATE='2024-01-01T00:00:00Z' \
           GIT_COMMITTER_DATE='2024-01-01T00:00:00Z' GIT_CONFIG_NOSYSTEM=1 HOME=$work
    run() {
      local g=("${P[@]}" "$prog")
      rm -rf repo && mkdir repo && cd repo || return 1
      "${g[@]}" init -q -b main . || return 1
      for d in $(seq 0 9); do
        mkdir -p "dir$d"
        for f in $(seq 0 29); do
          seq $((d * 1000 + f)) $((d * 1000 + f + 200)) > "dir$d/file$f.txt"
        done
      done
      "${g[@]}" add . && "${g[@]}" commit -q -m "first 300 files" || return 1
      for d in 0 3 7; do seq 1 50 >> "dir$d/file1.txt"; done
      "${g[@]}" rm -q 'dir9/file2*.txt' && "${g[@]}" add -A && "${g[@]}" commit -q -m second || return 1
      "${g[@]}" mv dir8 renamed && "${g[@]}" commit -q -m third || return 1
      "${g[@]}" log --format='%H %s' && "${g[@]}" ls-files | wc -l
      "${g[@]}" diff --stat HEAD~2 HEAD | tail -n 1
      "${g[@]}" gc -q && "${g[@]}" fsck --no-progress && "${g[@]}" rev-parse 'HEAD^{tree}'
      "${g[@]}" count-objects -v | grep -E '^(count|in-pack|packs)'
      cd ..
    } ;;
  threads)
    run() { "${P[@]}" "$prog"; } ;;
  *)
    echo "unknown kind $kind"; exit 2 ;;
esac

t0=$(date +%s.%N)
if ! run > expected.txt 2> expected.err; then
  echo "FAIL: $kind without the library failed"; cat expected.err; exit 1
fi
t1=$(date +%s.%N)
P=(env "LD_PRELOAD=$lib" "KBUDDY_MALLOC_STATS=$work/stats.txt")
run > actual.txt 2> actual.err
status=$?
t2=$(date +%s.%N)

fail=0
stat_re='^kbuddy-malloc: pid [0-9]*: live'
[ $status -eq 0 ] || { echo "FAIL: $kind with the library exited $status"; fail=1; }
if ! cmp -s expected.txt actual.txt; then
  echo "FAIL: output differs"; diff expected.txt actual.txt | head -n 20; fail=1
fi
touch stats.txt
if ! grep -q "$stat_re" stats.txt; then
  echo "FAIL: the library did not report: was it loaded?"; fail=1
fi
if grep -q 'kbuddy-malloc' actual.err; then
  echo "FAIL: the library reported a problem:"; grep kbuddy actual.err | head; fail=1
fi
if ! cmp -s actual.err expected.err; then
  echo "note: stderr differs:"; diff actual.err expected.err | head -n 10
fi
echo "--- $kind: $(wc -l < actual.txt) lines of output, identical: $([ $fail = 0 ] && echo yes || echo NO)"
head -n 6 actual.txt
echo "--- processes served by the library: $(grep -c "$stat_re" stats.txt); the last one:"
grep "$stat_re" stats.txt | tail -n 1
printf -- '--- wall time: glibc %.2f s, kbuddy %.2f s\n' "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)"
exit $fail
