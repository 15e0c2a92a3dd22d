"""Known-fakes bank benchmark: PDQ match latency and memory against the bank's size, for the index
the workers use (core/bank.py: faiss IndexBinaryFlat, exact, one thread) against brute force in
numpy measured in the same run, with faiss's multi-index hashing (IndexBinaryMultiHash 16x16, as
threatexchange's PDQMultiHashIndex) beside them.

For each bank size (default 10k, 100k, 1M PDQ hashes): build each index, then run queries that
are half planted near-duplicates (an indexed hash with 8-28 bits flipped: must be found) and
half random (no match); time one hash searched at the near-miss radius (63 bits: the worker's
single search answers "match" at <= 31 and "near miss" at 32-63 together), and an image upload's
8 hashes (its rotations and mirror images) in one call. Memory: the process's resident size
before and after building. Aim: p99 <= 5 ms at 1M on 2 cores.

    python bench/bank.py [--sizes 10000 100000 1000000] [--queries 400]

The bank's hashes here are random 256-bit codes. Real PDQ hashes are less uniform, which changes
nothing for the exhaustive index and fills some buckets of the multi-index one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def timed(fn, queries) -> list[float]:
    out = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--slow-queries", type=int, default=40, help="queries timed on the slow baselines")
    args = ap.parse_args()
    import faiss

    from core.bank import new_faiss_index
    from detector.perceptual import PDQ_MATCH_DISTANCE, PDQ_NEAR_DISTANCE

    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        codes = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
        before = rss_mib()
        t = time.perf_counter()
        index = new_faiss_index(codes)
        build_s, mem = time.perf_counter() - t, rss_mib() - before
        planted = rng.integers(0, n, size=args.queries // 2)
        queries = []
        for i in planted:
            bits = np.unpackbits(codes[i])
            bits[rng.choice(256, size=int(rng.integers(8, 29)), replace=False)] ^= 1
            queries.append(np.packbits(bits)[None, :])
        queries += [q[None, :] for q in rng.integers(0, 256, size=(args.queries - len(planted), 32), dtype=np.uint8)]
        found = sum(int(p) in index.range_search(q, PDQ_MATCH_DISTANCE + 1)[2] for p, q in zip(planted, queries))
        one = timed(lambda q, ix=index: ix.range_search(q, PDQ_NEAR_DISTANCE + 1), queries)
        eights = [np.concatenate(queries[i:i + 8]) for i in range(0, len(queries) - 8, 8)]
        eight = timed(lambda q, ix=index: ix.range_search(q, PDQ_NEAR_DISTANCE + 1), eights)

        def brute(q, codes=codes):
            d = np.bitwise_count(np.bitwise_xor(codes, q)).sum(axis=1, dtype=np.int32)
            return np.nonzero(d <= PDQ_NEAR_DISTANCE)[0]

        slow = queries[: args.slow_queries]
        numpy_ms = timed(brute, slow)
        before = rss_mib()
        mih = faiss.IndexBinaryMultiHash(256, 16, 16)
        mih.add(codes)
        mih_mem = rss_mib() - before
        mih.nflip = PDQ_MATCH_DISTANCE // 16
        mih31 = timed(lambda q, ix=mih: ix.range_search(q, PDQ_MATCH_DISTANCE + 1), queries)
        mih.nflip = PDQ_NEAR_DISTANCE // 16
        mih63 = timed(lambda q, ix=mih: ix.range_search(q, PDQ_NEAR_DISTANCE + 1), slow)
        rows.append((f"{n:,}", f"{build_s:.2f} s", f"{mem:.0f} MiB", f"{found}/{len(planted)}",
                     f"{pct(one, 50):.2f} / {pct(one, 99):.2f}", f"{pct(eight, 50):.1f} / {pct(eight, 99):.1f}",
                     f"{pct(numpy_ms, 50):.1f} / {pct(numpy_ms, 99):.1f}",
                     f"{pct(numpy_ms, 50) / pct(one, 50):.0f}x",
                     f"{pct(mih31, 50):.2f} / {pct(mih31, 99):.2f}", f"{pct(mih63, 50):.0f} / {pct(mih63, 99):.0f}",
                     f"{mih_mem:.0f} MiB",
                     ("PASS" if pct(one, 99) <= 5.0 else "FAIL") if n >= 1_000_000 else ""))
    cores = len(os.sched_getaffinity(0))
    print(f"\nVerity bank benchmark: random 256-bit PDQ codes, {args.queries} queries per size (half planted "
          f"near-duplicates 8-28 bits away), {cores} cores; times in ms, p50 / p99")
    header = ("bank size", "build", "memory", "planted found", "one hash at 63 (the worker's)",
              "an image's 8 hashes", "numpy brute force at 63 (baseline)", "speed-up",
              "multi-index at 31", "multi-index at 63", "multi-index memory", "p99 <= 5 ms at 1M")
    widths = [max(len(str(r[i])) for r in [*rows, header]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
