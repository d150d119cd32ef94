#!/usr/bin/python3
"""FP digital CIM study (fp_digital, ISSCC 2025 14.5): Fashion-MNIST MLP and CNN trained with
FF/BP on the macro (GC and WU in FP32 outside it) against pimtrain's FP32 engine on the same
network, data and epochs: BF16 and FP8 (E4M3 forward / E5M2 errors), vector-wise vs layer-wise
pre-alignment, aligned widths 4..12, inference in approximate mode; the speed of an MLP epoch on
the macro against the FP32 engine (same run); and, from bench/fp_bench.cc, the dot-product error
against FP64 by exponent spread and the approximate MAC's NMED.

Usage: /usr/bin/python3 bench/fp_study.py [--pimtrain build/release/pimtrain]
           [--bench build/release/bench/pimtrain_bench] [--epochs 10] [--cnn-epochs 3]
           [--cnn-train-limit 20000] [--sweep-epochs 3] [--sweep-train-limit 0] [--threads 2]
           [--parts train,cnn,sweep,approx,speed,dot,nmed]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = os.path.join(ROOT, "presets", "chips", "isscc25.yaml")

FP8 = ["pim.macro.input_format=e4m3", "pim.macro.weight_format=e4m3",
       "pim.macro.error_format=e5m2"]
LAYER = ["pim.macro.alignment=layer"]

CNN_YAML = """
model:
  impl: sequential
  layers:
    - {impl: conv2d, out_channels: 16, kernel: 5, padding: 2}
    - {impl: relu}
    - {impl: max_pool2d, kernel: 2}
    - {impl: conv2d, out_channels: 32, kernel: 5, padding: 2}
    - {impl: relu}
    - {impl: max_pool2d, kernel: 2}
    - {impl: flatten}
    - {impl: linear, out_features: 128}
    - {impl: relu}
    - {impl: linear, out_features: 10}
"""


def train(args, configs, sets, epochs, out=None, train_limit=0):
    """Trains; returns (median seconds per epoch, final test accuracy)."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = out or tmp
        cmd = [args.pimtrain, "train", *configs, "--out", run_dir,
               "--set", f"train.epochs={epochs}", "--set", f"threads={args.threads}"]
        if out is None:
            cmd += ["--set", "train.checkpoint=false"]
        if train_limit:
            cmd += ["--set", f"data.train_limit={train_limit}"]
        for s in sets:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            lines = [json.loads(l) for l in f if l.strip()]
    return float(np.median([l["seconds"] for l in lines])), lines[-1]["test_accuracy"]


def evaluate(args, configs, sets, checkpoint):
    cmd = [args.pimtrain, "eval", *configs, "--checkpoint", checkpoint,
           "--set", f"threads={args.threads}"]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = re.search(r"test accuracy:?\s*([0-9.]+)\s*%", out)
    if not m:
        raise RuntimeError("no accuracy in: " + out)
    return float(m.group(1)) / 100


def row(name, acc, ref=None, sec=None, ref_sec=None):
    s = f"| {name} | {100 * acc:.2f} |"
    s += f" {100 * (acc - ref):+.2f} |" if ref is not None else " |"
    if sec is not None:
        s += f" {sec:.2f} |" + (f" {sec / ref_sec:.2f}x |" if ref_sec else " |")
    print(s, flush=True)


def bench(args, filt):
    out = subprocess.run([args.bench, f"--benchmark_filter={filt}", "--benchmark_format=json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["benchmarks"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build", "release", "pimtrain"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "release", "bench",
                                                    "pimtrain_bench"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--cnn-epochs", type=int, default=3)
    ap.add_argument("--cnn-train-limit", type=int, default=20000)
    ap.add_argument("--sweep-epochs", type=int, default=3)
    ap.add_argument("--sweep-train-limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="train,cnn,sweep,approx,speed,dot,nmed")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    e = args.epochs

    if "train" in parts or "approx" in parts:
        print(f"\n### MLP 784-256-128-10, {e} epochs, full Fashion-MNIST "
              f"(preset isscc25, {args.threads} threads)\n")
        print("| setting | test acc % | vs FP32 (points) | s/epoch | vs FP32 |")
        print("|---|---|---|---|---|")
        fp_s, fp_acc = train(args, [PRESET], ["pim.macro=null"], e)
        row("FP32 engine", fp_acc, None, fp_s)
        ckpt = {}
        settings = [("BF16 accurate, vector-wise, 8b (preset)", [], "bf16"),
                    ("FP8 E4M3/E5M2 accurate, vector-wise, 4b", FP8, "fp8")]
        if "train" in parts:
            settings += [("BF16 accurate, layer-wise, 8b", LAYER, None),
                         ("FP8 accurate, layer-wise, 4b", FP8 + LAYER, None)]
        tmp = tempfile.mkdtemp()
        for name, sets, keep in settings:
            out = os.path.join(tmp, keep) if keep else None
            s, acc = train(args, [PRESET], sets, e, out=out)
            row(name, acc, fp_acc, s, fp_s)
            if keep:
                ckpt[keep] = (out, sets, acc)
        if "approx" in parts:
            print(f"\n### Inference in approximate mode (the accurate-mode MLPs above, "
                  f"evaluated on the macro with broken-array multipliers, LOA adders, bias)\n")
            print("| trained | approx setting | test acc % | vs accurate (points) |")
            print("|---|---|---|---|")
            for key in ("bf16", "fp8"):
                out, sets, acc = ckpt[key]
                for d, o, b in [(1, 0, 1), (2, 0, 1), (2, 2, 1), (2, 2, 0), (3, 4, 1)]:
                    aset = sets + ["pim.macro.mode=approximate",
                                   f"pim.macro.approx_dropped_columns={d}",
                                   f"pim.macro.approx_or_bits={o}",
                                   f"pim.macro.approx_bias_compensation={'true' if b else 'false'}"]
                    a = evaluate(args, [PRESET], aset, out)
                    print(f"| {key} | drop i+j<{d}, {o} OR bits, bias {'on' if b else 'off'} | "
                          f"{100 * a:.2f} | {100 * (a - acc):+.2f} |", flush=True)

    if "cnn" in parts:
        ce, cl = args.cnn_epochs, args.cnn_train_limit
        print(f"\n### CNN (conv 16-32 5x5, fc 128, 10), {ce} epochs on the first {cl} training "
              f"samples, full test set\n")
        print("| setting | test acc % | vs FP32 (points) | s/epoch | vs FP32 |")
        print("|---|---|---|---|---|")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(CNN_YAML)
            cnn = f.name
        fp_s, fp_acc = train(args, [PRESET, cnn], ["pim.macro=null"], ce, train_limit=cl)
        row("FP32 engine", fp_acc, None, fp_s)
        for name, sets in [("BF16 accurate, vector-wise, 8b", []),
                           ("FP8 E4M3/E5M2 accurate, vector-wise, 4b", FP8),
                           ("BF16 accurate, layer-wise, 8b", LAYER),
                           ("FP8 accurate, layer-wise, 4b", FP8 + LAYER)]:
            s, acc = train(args, [PRESET, cnn], sets, ce, train_limit=cl)
            row(name, acc, fp_acc, s, fp_s)
        os.unlink(cnn)

    if "sweep" in parts:
        se, sl = args.sweep_epochs, args.sweep_train_limit
        lim = f"first {sl} training samples" if sl else "full training set"
        print(f"\n### Aligned width sweep, MLP, {se} epochs, {lim} (inputs, weights and errors "
              f"at the same width)\n")
        fp_s, fp_acc = train(args, [PRESET], ["pim.macro=null"], se, train_limit=sl)
        print(f"FP32 engine, same epochs and data: {100 * fp_acc:.2f} %\n")
        print("| width | BF16 vector | BF16 layer | FP8 vector | FP8 layer |")
        print("|---|---|---|---|---|")
        for w in range(4, 13):
            ws = [f"pim.macro.input_bits={w}", f"pim.macro.weight_bits={w}",
                  f"pim.macro.error_bits={w}"]
            accs = []
            for sets in ([], LAYER, FP8, FP8 + LAYER):
                _, acc = train(args, [PRESET], ws + sets, se, train_limit=sl)
                accs.append(acc)
            print(f"| {w} | " + " | ".join(f"{100 * a:.2f}" for a in accs) + " |", flush=True)

    if "speed" in parts:
        print(f"\n### Speed: one MLP epoch (full data), median of 3 epochs, "
              f"{args.threads} threads, interleaved\n")
        print("| run | FP32 engine s/epoch | fp_digital BF16 s/epoch | ratio |")
        print("|---|---|---|---|")
        for i in range(2):
            fs, _ = train(args, [PRESET], ["pim.macro=null"], 3)
            ms, _ = train(args, [PRESET], [], 3)
            print(f"| {i + 1} | {fs:.2f} | {ms:.2f} | {ms / fs:.2f}x |", flush=True)

    if "dot" in parts:
        print("\n### Dot products (length 256) through the macro vs FP64, by exponent spread "
              "(FP32 output; median relative error, and mean |error| / sum |x w|)\n")
        res = bench(args, "FpDotError")
        table = {}
        for b in res:
            _, fmt, bits, layer, spread, dist = b["name"].split("/")[:6]
            table[(fmt, bits, layer, dist, int(spread))] = (b["rel_err_median"], b["rel_err_l1"])
        spreads = sorted({k[4] for k in table})
        for dist, dname in (("0", "exponents uniform over the spread"),
                            ("1", "one huge element, the rest 2^-spread below it")):
            print(f"\n{dname}:\n")
            print("| format | width | alignment | " +
                  " | ".join(f"spread {s}" for s in spreads) + " |")
            print("|---|---|---|" + "---|" * len(spreads))
            for fmt, fname in (("0", "BF16"), ("1", "FP8 E4M3")):
                for bits in ("4", "8", "12"):
                    for layer, lname in (("0", "vector"), ("1", "layer")):
                        vals = [table[(fmt, bits, layer, dist, s)] for s in spreads]
                        print(f"| {fname} | {bits} | {lname} | " +
                              " | ".join(f"{m:.1e} / {l:.1e}" for m, l in vals) + " |")

    if "nmed" in parts:
        print("\n### Approximate MAC: NMED against the exact MAC (64-input MAC, all nibble "
              "passes, approximations on the least significant pair); NMED_max = mean |error| / largest "
              "possible |S|, NMED_obs = mean |error| / largest |S| observed\n")
        res = bench(args, "FpApproxNmed")
        print("| width | data | dropped i+j< | OR bits | bias comp | NMED_max % | NMED_obs % | "
              "mean error / max_obs % |")
        print("|---|---|---|---|---|---|---|---|")
        for b in res:
            _, bits, d, o, bias, kind = b["name"].split("/")[:6]
            if int(d) + int(o) == 0:
                continue
            print(f"| {bits} | {'aligned Gaussian' if kind == '1' else 'uniform'} | {d} | {o} | "
                  f"{'on' if bias == '1' else 'off'} | {b['NMED_max_pct']:.3f} | "
                  f"{b['NMED_obs_pct']:.3f} | {b['bias_pct_obs']:+.3f} |")


if __name__ == "__main__":
    sys.exit(main())
