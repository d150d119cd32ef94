#!/usr/bin/python3
"""Speed grid of the analog read-out (issue 20, item 2): one MLP training epoch on the analog
macro (784-256-128-10, 8-bit inputs and weights, 1-bit cells, 1-bit DACs, 128-row arrays, FP and
BP analog) against PyTorch FP32 measured in the same run, over thermal noise sigma in
{0, 0.25, 0.5, 1.0} LSB x ADC bits in {4, 6, 8} for dataflow A, plus dataflows B and C at one
point each (the formula's resolution, sigma 0.25). Each cell at its best thread count (1 or 2),
PyTorch at its best. The headline is the worst cell.

Timing on a shared machine: every cell's runs are interleaved with PyTorch epochs on the same
subset (per repeat: PyTorch at each thread count, then the cell at each thread count), repeated
--repeats times; a cell's figure is the median over repeats at its best thread count, its peer
the median PyTorch epoch (best thread count) of the same interleaved runs, and the ratio theirs.

Conversions: "counted" are the ADC conversions the run reports (every one is priced); "simulated"
are those the kernel draws and quantizes one by one. The lossless read-out (dataflow A, 8-bit ADC
over 128 rows: one code per unit; sigma <= 0.25) computes the exact integer product and visits
only its sparse-tail events (docs/analog.md): a fraction tails / 65536 of the conversions, about
P(|sigma z| >= 1/2) = erfc(0.5 / (sigma sqrt 2)) (sigma 0.25: 4.6 %; sigma 0: none). Every other
cell simulates every conversion.

Usage: /usr/bin/python3 bench/analog_grid.py [--pimtrain build/release/pimtrain]
           [--train-limit 10000] [--threads 1,2] [--cells all|A|BC] [--repeats 3]
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

BASE = ["train.checkpoint=false", "train.epochs=1",
        "pim.macro.impl=analog_crossbar", "pim.macro.rows=128", "pim.macro.cols=128",
        "pim.macro.input_bits=8", "pim.macro.weight_bits=8",
        "pim.macro.decomposition=bit_serial", "data.normalize=unit",
        # Speed does not depend on the step size; a small one keeps the coarse, noisy cells
        # from diverging (issue 20's items 3-5) before the epoch ends.
        "train.optimizer.learning_rate=0.01", "train.on_nonfinite=skip_step"]


def cells(which):
    if which.count(":") == 2:
        df, bits, sigma = which.split(":")
        return [(df, int(bits), float(sigma))]
    out = []
    if which in ("all", "A"):
        for bits in (4, 6, 8):
            for sigma in (0.0, 0.25, 0.5, 1.0):
                out.append(("A", bits, sigma))
    if which in ("all", "BC"):
        out.append(("B", 0, 0.25))
        out.append(("C", 0, 0.25))
    return out


def simulated_fraction(df, bits, sigma):
    """Share of the counted conversions the kernel draws and quantizes one by one."""
    lossless = df == "A" and bits == 8 and sigma <= 0.25
    if not lossless:
        return 1.0, "general"
    if sigma == 0:
        return 0.0, "lossless (exact product)"
    return math.erfc(0.5 / (sigma * math.sqrt(2))), "lossless (sparse tails)"


def run_cell(binary, df, bits, sigma, threads, limit):
    sets = BASE + [f"pim.macro.dataflow={df}", f"pim.macro.thermal_noise.sigma={sigma}",
                   f"pim.macro.adc.bits={bits}", f"threads={threads}",
                   f"data.train_limit={limit}", "data.test_limit=1000"]
    with tempfile.TemporaryDirectory() as out:
        cmd = [binary, "train", os.path.join(ROOT, "configs", "mlp.yaml"), "--out", out]
        for s in sets:
            cmd += ["--set", s]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"   ({df}, {bits} bits, sigma {sigma}, {threads} threads) failed: "
                  f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}",
                  flush=True)
            return float("inf"), 0, 0.0
        with open(os.path.join(out, "metrics.jsonl")) as f:
            line = json.loads(f.readline())
    conv = sum(l["actions"][st].get("adc_conversions", 0) for l in line["layers"]
               for st in ("forward", "backward"))
    return line["seconds"], conv, line["test_accuracy"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build", "release", "pimtrain"))
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cells", default="all", help="all, A, BC, or one cell as DF:BITS:SIGMA")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    import vs_pytorch  # noqa: E402  (Debian's python3-torch)
    xtr, ytr, xte, yte = vs_pytorch.load_data()
    data = (xtr[:args.train_limit], ytr[:args.train_limit], xte[:1000], yte[:1000])
    print(f"load average before: {os.getloadavg()}", flush=True)
    vs_pytorch.run_torch("mlp", threads[0], 1, data)  # warm-up (imports, allocator)

    def torch_epoch(t):
        secs, _ = vs_pytorch.run_torch("mlp", t, 2, data)
        return min(secs)

    print(f"\n{'df':>2} {'bits':>4} {'sigma':>5} {'path':<25} " +
          " ".join(f"{f'{t}t s':>7}" for t in threads) +
          f" {'best':>6} {'torch':>6} {'x torch':>7} {'G counted':>9} {'G sim':>7} "
          f"{'G sim/s':>7} {'G not visited':>13} {'acc':>6}", flush=True)
    rows, all_torch = [], {t: [] for t in threads}
    for df, bits, sigma in cells(args.cells):
        times = {t: [] for t in threads}
        torch_times = {t: [] for t in threads}
        conv = acc = 0
        for _ in range(args.repeats):
            for t in threads:
                torch_times[t].append(torch_epoch(t))
            for t in threads:
                s, conv, acc = run_cell(args.pimtrain, df, bits, sigma, t, args.train_limit)
                times[t].append(s)
        med = {t: statistics.median(v) for t, v in times.items()}
        tmed = {t: statistics.median(v) for t, v in torch_times.items()}
        for t in threads:
            all_torch[t] += torch_times[t]
        best, tbest = min(med.values()), min(tmed.values())
        frac, path = simulated_fraction(df, bits, sigma)
        sim = conv * frac
        ratio = best / tbest
        rows.append((ratio, df, bits, sigma, best, tbest, med))
        bits_s = str(bits) if bits else "form"
        print(f"{df:>2} {bits_s:>4} {sigma:5.2f} {path:<25} " +
              " ".join(f"{med[t]:7.2f}" for t in threads) +
              f" {best:6.2f} {tbest:6.3f} {ratio:7.2f} {conv / 1e9:9.3f} {sim / 1e9:7.3f} "
              f"{sim / best / 1e9:7.3f} {(conv - sim) / 1e9:13.3f} {100 * acc:5.1f}%",
              flush=True)
    print("\nPyTorch FP32 MLP epoch, median over the whole run: " +
          ", ".join(f"{t} thread(s) {statistics.median(v):.3f} s" for t, v in all_torch.items()))
    print(f"load average after: {os.getloadavg()}")
    worst, bestc = max(rows), min(rows)
    print(f"\nworst cell: dataflow {worst[1]}, ADC bits {worst[2] or 'formula'}, sigma "
          f"{worst[3]}: {worst[0]:.2f}x PyTorch FP32 ({worst[4]:.2f} s vs {worst[5]:.3f} s, best "
          f"thread counts, medians of {args.repeats}; target <= 3x); best cell {bestc[0]:.2f}x")


if __name__ == "__main__":
    main()
