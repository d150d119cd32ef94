#!/usr/bin/python3
"""What calling a macro through Python costs over the same call in C++.

Usage: /usr/bin/python3 bench/py_overhead.py [--macro digital_bitserial] [--size 256]
           [--batch 64] [--calls 200] [--rounds 15] [--threads 1] [--transposed]

A size x size macro (default: digital_bitserial, 8-bit inputs and weights) holds random
weights; a batch of random post-ReLU-like inputs is multiplied through it. Each round times
`calls` calls of pimtrain.Macro.multiply from a Python loop (argument conversion, output array,
GIL release, count bookkeeping included) and `calls` calls of the same Macro::Multiply from a
C++ loop inside the module (Macro._time_multiply: same macro, operands and counting), the two
interleaved so both see the same machine load. Prints the per-call medians, the overhead as
the median of the rounds' ratios, and as the ratio of the two sides' best rounds (the least
disturbed by other load on a shared machine); the target is < 5 %.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "python")]
import pimtrain  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--macro", default="digital_bitserial")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--transposed", action="store_true")
    args = ap.parse_args()
    pimtrain.set_threads(args.threads)
    m = pimtrain.Macro({"impl": args.macro, "rows": args.size, "cols": args.size})
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((args.size, args.size)) * 0.05).astype(np.float32)
    x = np.maximum(rng.standard_normal((args.batch, args.size)), 0).astype(np.float32)
    m.program(w)
    multiply = m.multiply
    for _ in range(20):  # warm caches and the pool
        multiply(x, args.transposed)
    py, cpp, ratios = [], [], []
    for r in range(args.rounds):
        def python_side():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                multiply(x, args.transposed)
            return (time.perf_counter() - t0) / args.calls

        def cpp_side():
            return m._time_multiply(x, transposed=args.transposed, repeats=args.calls)

        if r % 2 == 0:
            p, c = python_side(), cpp_side()
        else:
            c, p = cpp_side(), python_side()
        py.append(p)
        cpp.append(c)
        ratios.append(p / c)
    macs = args.batch * args.size * args.size
    pm, cm, ratio = statistics.median(py), statistics.median(cpp), statistics.median(ratios)
    print(f"{args.macro} {args.size}x{args.size}, batch {args.batch}, "
          f"{'transposed' if args.transposed else 'forward'} read, {args.threads} thread(s), "
          f"{args.rounds} rounds of {args.calls} calls")
    print(f"{'side':28} {'us/call':>9} {'GMAC/s':>8}")
    print(f"{'C++ loop (Macro::Multiply)':28} {cm * 1e6:9.1f} {macs / cm * 1e-9:8.2f}")
    print(f"{'Python loop (Macro.multiply)':28} {pm * 1e6:9.1f} {macs / pm * 1e-9:8.2f}")
    print(f"overhead {100 * (ratio - 1):+.2f} % (median of round ratios; range "
          f"{100 * (min(ratios) - 1):+.1f} .. {100 * (max(ratios) - 1):+.1f} %); target < 5 %")
    print(f"best rounds: C++ {min(cpp) * 1e6:.1f} us, Python {min(py) * 1e6:.1f} us, overhead "
          f"{100 * (min(py) / min(cpp) - 1):+.2f} % ({(min(py) - min(cpp)) * 1e6:.2f} us per call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
