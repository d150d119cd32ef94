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

With --epoch N: the per-epoch cost of the interop path instead (issue 18: within 1.3x of the
CLI). resnet20 on T-PIM's macro (presets/chips/tpim.yaml) for one epoch of the first N
Fashion-MNIST images at 32x32x3: the PyTorch module of bench/graph_study.py converted with
pimtrain.torch.convert and trained from Python (torch at 1 thread, pimtrain.set_threads(T)),
against the same network and data from `pimtrain train` at T threads; the two interleaved,
--repeat times, medians of the epoch seconds (training only) and of the pairs' ratios.
    /usr/bin/python3 bench/py_overhead.py --epoch 256 --threads 1 --repeat 5
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
    ap.add_argument("--epoch", type=int, default=0,
                    help="samples: time an interop epoch against the CLI instead")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build/release/pimtrain"))
    ap.add_argument("--profile", action="store_true",
                    help="with --epoch: cProfile one interop epoch (top 25 by own time)")
    args = ap.parse_args()
    if args.epoch:
        return interop_epochs(args)
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


def interop_epochs(args):
    sys.path[:0] = [os.path.join(ROOT, "bench")]
    import graph_study as gs
    import pimtrain.torch as pt
    import torch
    data = gs.load_data(args.epoch, 64, 32, 3)
    cfg = gs.pim_config("resnet20", args.epoch, 64, 1, args.threads, True)
    spec = gs.NETS["resnet20"]["optimizer"]

    def python_side():
        torch.manual_seed(gs.SEED)
        model = gs.ResNet20()
        pt.convert(model, os.path.join(ROOT, "presets", "chips", "tpim.yaml"))
        pimtrain.set_threads(args.threads)
        return gs.run_torch(model, spec, 1, 1, data)[0][0]

    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        python_side()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return 0
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"resnet20 on T-PIM, {args.epoch} samples, {args.threads} thread(s), "
          f"{args.repeat} repeats interleaved")
    print(f"{'repeat':>6} {'torch.convert s':>15} {'CLI s':>8} {'ratio':>6}")
    py, cli, ratios = [], [], []
    for r in range(args.repeat):
        if r % 2 == 0:
            p = python_side()
            c = gs.run_pimtrain(args.pimtrain, cfg)[0][0]
        else:
            c = gs.run_pimtrain(args.pimtrain, cfg)[0][0]
            p = python_side()
        py.append(p)
        cli.append(c)
        ratios.append(p / c)
        print(f"{r + 1:6d} {p:15.2f} {c:8.2f} {p / c:6.2f}", flush=True)
    print(f"median: torch.convert {statistics.median(py):.2f} s, CLI {statistics.median(cli):.2f} "
          f"s, ratio of medians {statistics.median(py) / statistics.median(cli):.2f}, median of "
          f"ratios {statistics.median(ratios):.2f} (target <= 1.3); "
          f"{os.popen('uptime').read().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
