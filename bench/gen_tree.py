#!/usr/bin/env python3
"""gen_tree.py DIR FILES LARGE_MB SEED: the bench image's layer trees.

FILES files under DIR/l<SEED>/dNNN/sN, sizes from 0 to 64000 bytes, half
text-like (compressible words), half binary-like (half random, half
zeros); with LARGE_MB, one file of that many MiB, alternating random and
zero MiB. Shared by bench/overlay/unpack.sh, bench/analyze.sh and
bench/registry.sh, so all measure the same image.
"""
import os, sys, random
root, n, large, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz_") for _ in range(rnd.randint(2, 10))) for _ in range(4000)]
os.makedirs(root, exist_ok=True)
for i in range(n):
    d = os.path.join(root, f"l{seed}", f"d{i % 300:03d}", f"s{i % 5}")
    os.makedirs(d, exist_ok=True)
    size = rnd.choice([0, 100, 1000, 4000, 16000, 64000])
    if i % 2:  # text-like, compressible
        data = b" ".join(rnd.choice(words) for _ in range(size // 6))[:size]
    else:      # binary-like: half random, half zeros
        data = os.urandom(size // 2) + bytes(size - size // 2)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(data)
if large:
    chunk = os.urandom(1 << 20)
    with open(os.path.join(root, f"large{seed}.bin"), "wb") as f:
        for i in range(large):
            f.write(chunk if i % 2 else bytes(1 << 20))
