#!/usr/bin/python3
"""T-PIM study: accuracy of bit-accurate T-PIM training (all four stages on the digital
bit-serial macro) against pimtrain's FP32 engine on the same network and epochs, across
input/weight widths, and the simulation speed of a T-PIM epoch against the FP32 engine and
PyTorch FP32 (measured in the same run).

Usage: /usr/bin/python3 bench/tpim_study.py [--net mlp|cnn] [--epochs 10] [--threads 2]
           [--pimtrain build/release/pimtrain] [--speed-only [--repeat N]]

--speed-only --repeat N (MLP) times the T-PIM preset, the FP32 engine and PyTorch N times each,
rotating their order, and reports each side's median epoch over all repetitions, the ratios of
those medians, and the range of the per-repetition ratios (for a shared, noisy machine).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))


def train_lines(binary, preset, sets, epochs, threads):
    """Trains once; returns the run's metrics.jsonl records."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [binary, "train", preset, "--out", out, "--set", f"train.epochs={epochs}",
               "--set", f"threads={threads}", "--set", "train.checkpoint=false"]
        for s in sets:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [json.loads(l) for l in f if l.strip()]


def run(binary, preset, sets, epochs, threads):
    lines = train_lines(binary, preset, sets, epochs, threads)
    return float(np.median([l["seconds"] for l in lines])), lines[-1]["test_accuracy"], lines[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="mlp")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build", "release", "pimtrain"))
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    preset = os.path.join(ROOT, "presets", "chips", "tpim.yaml" if args.net == "mlp"
                          else "tpim_cnn.yaml")
    b, e, t = args.pimtrain, args.epochs, args.threads
    if args.speed_only and args.repeat > 1 and args.net == "mlp":
        return speed_repeated(args, preset)

    fp_s, fp_acc, _ = run(b, preset, ["pim.macro=null"], e, t)
    print(f"T-PIM study: {args.net}, {e} epochs, {t} threads, preset {os.path.relpath(preset, ROOT)}")
    print(f"{'setting':34} {'test acc':>8} {'vs FP32':>8} {'s/epoch':>8} {'vs FP32':>8}")
    print(f"{'FP32 engine (same net, same data)':34} {100 * fp_acc:7.2f}% {'':>8} {fp_s:8.2f}")
    settings = [("in 8b, w 8b fwd / 16b bwd (preset)", [])]
    if not args.speed_only:
        settings += [
            ("in 6b, w 8b / 16b", ["pim.macro.input_bits=6", "pim.macro.error_bits=6"]),
            ("in 4b, w 4b / 16b", ["pim.macro.input_bits=4", "pim.macro.error_bits=4",
                                   "pim.macro.weight_bits=4"]),
            ("in 8b, w 4b / 16b", ["pim.macro.weight_bits=4"]),
            ("in 8b, w 2b / 16b", ["pim.macro.weight_bits=2"]),
            ("in 2b, w 2b / 16b", ["pim.macro.input_bits=2", "pim.macro.error_bits=2",
                                   "pim.macro.weight_bits=2"]),
            ("in 8b, w 8b / 8b stored", ["pim.macro.weight_bits_backward=8"]),
            ("in 8b, w 4b / 4b stored", ["pim.macro.weight_bits=4",
                                         "pim.macro.weight_bits_backward=4",
                                         "pim.macro.weight_rounding=stochastic"]),
        ]
    rows = []
    for name, sets in settings:
        s, acc, last = run(b, preset, sets, e, t)
        rows.append(dict(setting=name, acc=acc, seconds=s))
        print(f"{name:34} {100 * acc:7.2f}% {100 * (acc - fp_acc):+7.2f}  {s:8.2f} {s / fp_s:7.2f}x",
              flush=True)
    if args.net == "mlp":
        # PyTorch FP32 on the same MLP, same thread count, same run (bench/vs_pytorch.py).
        import vs_pytorch
        data = vs_pytorch.load_data()
        tsec, _ = vs_pytorch.run_torch("mlp", t, min(e, 2), data)
        tm = float(np.median(tsec))
        print(f"PyTorch FP32 MLP epoch: {tm:.2f} s; T-PIM (preset) / PyTorch = "
              f"{rows[0]['seconds'] / tm:.2f}, T-PIM / pimtrain FP32 = {rows[0]['seconds'] / fp_s:.2f}")


def run_epochs(binary, preset, sets, epochs, threads):
    """Every training epoch's seconds of one run."""
    return [l["seconds"] for l in train_lines(binary, preset, sets, epochs, threads)]


def speed_repeated(args, preset):
    import vs_pytorch
    data = vs_pytorch.load_data()
    b, e, t = args.pimtrain, args.epochs, args.threads
    sides = {
        "tpim": lambda: run_epochs(b, preset, [], e, t),
        "fp32": lambda: run_epochs(b, preset, ["pim.macro=null"], e, t),
        "torch": lambda: vs_pytorch.run_torch("mlp", t, e, data)[0],
    }
    order = list(sides)
    times = {k: [] for k in sides}
    per_rep = []
    for r in range(args.repeat):
        rep = {}
        for k in order[r % 3:] + order[:r % 3]:
            rep[k] = sides[k]()
            times[k] += rep[k]
        per_rep.append({k: float(np.median(v)) for k, v in rep.items()})
    med = {k: float(np.median(v)) for k, v in times.items()}
    vs_fp = [x["tpim"] / x["fp32"] for x in per_rep]
    vs_torch = [x["tpim"] / x["torch"] for x in per_rep]
    print(f"T-PIM speed: mlp, {e} epochs x {args.repeat} runs each, {t} threads, preset "
          f"{os.path.relpath(preset, ROOT)} (median epoch seconds over all runs)")
    print(f"{'T-PIM s/ep':>10} {'FP32 s/ep':>10} {'torch s/ep':>10} {'T-PIM/FP32':>10} "
          f"{'range':>11} {'T-PIM/torch':>11} {'range':>11}")
    print(f"{med['tpim']:10.3f} {med['fp32']:10.3f} {med['torch']:10.3f} "
          f"{med['tpim'] / med['fp32']:10.2f} {min(vs_fp):5.2f}-{max(vs_fp):<5.2f} "
          f"{med['tpim'] / med['torch']:11.2f} {min(vs_torch):5.2f}-{max(vs_torch):<5.2f}")


if __name__ == "__main__":
    sys.exit(main())
