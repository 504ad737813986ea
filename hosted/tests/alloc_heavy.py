# An allocation-heavy Python program (run with PYTHONMALLOC=malloc so that
# every object goes through malloc): a million strings and a million dicts,
# built, sorted and digested. Prints digests only, so its output is the
# same under any allocator.
import hashlib
import random

random.seed(20240607)
N = 1_000_000
strs = [f"s{random.getrandbits(48):012x}-{i}" for i in range(N)]
strs.sort()
h = hashlib.sha256()
for s in strs[::997]:
    h.update(s.encode())
print("strings", len(strs), h.hexdigest()[:32])

dicts = [{"key": s, "n": i % 1009, "tags": [i & 7, i & 15]} for i, s in enumerate(strs)]
del strs
dicts.sort(key=lambda d: (d["n"], d["key"]))
h = hashlib.sha256()
for d in dicts[::991]:
    h.update(repr(d).encode())
print("dicts", len(dicts), h.hexdigest()[:32])

# Grow and shrink: string building, list slicing, a big join.
text = ",".join(d["key"] for d in dicts[:200_000])
parts = text.split(",")
print("join", len(text), len(parts), hashlib.sha256(text.encode()).hexdigest()[:32])
counts = {}
for d in dicts:
    counts[d["n"]] = counts.get(d["n"], 0) + len(d["key"])
print("counts", len(counts), sum(counts.values()))
