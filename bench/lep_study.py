#!/usr/bin/python3
"""SP-PIM local error prediction study: backprop vs dfa vs local_classifier on the Fashion-MNIST
MLP 784-256-128-10 (same data, epochs, seeds, optimizer), per-epoch test accuracy, sparsity of
activations and errors per layer (on a PIM macro), and the simulation's wall time per epoch,
all measured in one invocation with the algorithms interleaved (so machine load hits them alike).

Usage: /usr/bin/python3 bench/lep_study.py [--pimtrain build/release/pimtrain] [--net mlp|cnn]
           [--epochs 10]
           [--seeds 2,3,4] [--threads 2] [--optimizer YAML] [--macro-epochs 2]
           [--skip-accuracy] [--skip-macro] [--chip-epochs 3] [--json out.json]

Phase 1 (accuracy, speed): configs/mlp.yaml (the default run: standard-normalized inputs,
cosine schedule, batch 64) on the FP32 engine with the optimizer of --optimizer (the same for
every algorithm), every seed x algorithm, the algorithms interleaved.
Phase 2 (sparsity, speed on a macro): presets/chips/tpim.yaml (the digital bit-serial macro on
every weighted layer, which reports per-layer zero fractions in metrics.jsonl; inputs scaled to
[0, 1] so that background pixels are zeros) with the same optimizer and algorithms, the first
seed, --macro-epochs epochs.
Phase 3 (the chip): presets/chips/sppim.yaml trained with each algorithm for --chip-epochs
epochs: accuracy per epoch, sparsity, simulated epochs/s, energy per epoch and off-chip traffic
from the preset's cost model.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The local-error-prediction settings of the study, chosen on seed 1 (bench/results_lep.md,
# "Tuning"); the study's seeds exclude it.
ALGORITHMS = [
    ("backprop", "{impl: backprop}"),
    ("dfa", "{impl: local_error_prediction, variant: dfa, k_min: 4, k_max: 5, density: 0.5}"),
    ("local_classifier",
     "{impl: local_error_prediction, variant: local_classifier, k_min: 4, k_max: 5, density: 1.0}"),
]


def run(binary, config, sets, label):
    """Runs one training; returns the metrics.jsonl records."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [binary, "train", config, "--out", out, "--set", "train.checkpoint=false"]
        for s in sets:
            cmd += ["--set", s]
        print("  $ " + shlex.join(c if c != out else "DIR" for c in cmd), file=sys.stderr,
              flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            lines = [json.loads(l) for l in f if l.strip()]
    print(f"    {label}: test {100 * lines[-1]['test_accuracy']:.2f}%, "
          f"{statistics.median(l['seconds'] for l in lines):.2f} s/epoch", file=sys.stderr,
          flush=True)
    return lines


def mean_std(v):
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def print_sparsity(runs):
    """Zero fractions of the last epoch per algorithm and layer: activations = the layer's FP
    inputs; errors = the layer's output error (backprop: the BP input; local error prediction:
    the predicted, masked error its GC uses)."""
    print("| algorithm | layer | activation zeros | error zeros |")
    print("|---|---|---|---|")
    for name, _ in ALGORITHMS:
        for layer in runs[name][-1]["layers"]:
            # Backprop skips the first layer's BP (its input error is never needed), so no
            # error reaches that layer's macro: nothing was measured.
            measured = name != "backprop" or layer["actions"]["backward"]
            err = f"{layer['error_zero_fraction']:.3f}" if measured else "n/a (no BP)"
            print(f"| {name} | {layer['summary']} | {layer['input_zero_fraction']:.3f} | {err} |")


def chip(args, seeds, results):
    """Phase 3: the SP-PIM chip (presets/chips/sppim.yaml: double-buffered BF16 fp_digital
    macros, dual sparsity, super-pipelined schedule, its own optimizer) trained with each
    algorithm; the cost model prices every epoch. Backprop is priced as the chip would run it:
    its errors are not local, so the cost model pipelines it layer by layer (docs/cost.md)."""
    preset = os.path.join(ROOT, "presets", "chips", "sppim.yaml")
    runs = {}
    for name, alg in ALGORITHMS:
        sets = [f"threads={args.threads}", f"seed={seeds[0]}", f"train.epochs={args.chip_epochs}",
                f"train.algorithm={alg}"]
        runs[name] = run(args.pimtrain, preset, sets, f"{name} on the sppim chip")
    results["chip"] = runs
    print(f"## On the SP-PIM chip (presets/chips/sppim.yaml, its optimizer), seed {seeds[0]}, "
          f"{args.chip_epochs} epochs\n")
    print("| epoch | " + " | ".join(n for n, _ in ALGORITHMS) + " |")
    print("|" + "---|" * (len(ALGORITHMS) + 1))
    for e in range(args.chip_epochs):
        print(f"| {e + 1} | " + " | ".join(f"{100 * runs[n][e]['test_accuracy']:.2f}"
                                          for n, _ in ALGORITHMS) + " |")
    print()
    print_sparsity(runs)
    print("\nSimulated chip, last epoch (60 000 samples), priced by the preset's cost model:\n")
    print("| algorithm | test acc. (%) | simulated epochs/s | energy per epoch (mJ) | "
          "off-chip traffic (MB) | off-chip energy (mJ) | TOPS/W | simulation s/epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for name, _ in ALGORITHMS:
        last = runs[name][-1]
        c = last["cost"]
        sec = statistics.median(l["seconds"] for l in runs[name])
        print(f"| {name} | {100 * last['test_accuracy']:.2f} | {1 / c['latency_s']:.2f} | "
              f"{1e3 * c['energy_j']:.2f} | {c['offchip_bytes'] / 1e6:.1f} | "
              f"{1e3 * c['offchip_energy_j']:.2f} | {c['tops_per_watt']:.3g} | {sec:.2f} |")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build", "release", "pimtrain"))
    ap.add_argument("--net", choices=["mlp", "cnn"], default="mlp",
                    help="cnn: configs/cnn.yaml (conv5x5x16-pool-conv5x5x32-pool-fc128-fc10), "
                         "phase 1 only")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", default="2,3,4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--optimizer", default="{impl: adam, learning_rate: 0.001}")
    ap.add_argument("--macro-epochs", type=int, default=2)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-macro", action="store_true")
    ap.add_argument("--chip-epochs", type=int, default=3,
                    help="epochs of phase 3 (the sppim chip preset); 0 skips it")
    ap.add_argument("--json", help="also write every run's metrics here")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    common = [f"threads={args.threads}", f"train.optimizer={args.optimizer}"]
    results = {"optimizer": args.optimizer, "algorithms": ALGORITHMS, "accuracy": {}, "macro": {}}

    net = "MLP 784-256-128-10" if args.net == "mlp" else "CNN of configs/cnn.yaml"
    print(f"# Local error prediction study: {net}, Fashion-MNIST, "
          f"optimizer {args.optimizer}, cosine schedule, batch 64, {args.threads} threads")
    for name, alg in ALGORITHMS:
        print(f"- {name}: `{alg}`")
    print()

    if not args.skip_accuracy:
        runs = {name: [] for name, _ in ALGORITHMS}
        config = os.path.join(ROOT, "configs", args.net + ".yaml")
        for seed in seeds:
            for name, alg in ALGORITHMS:
                sets = common + [f"seed={seed}", f"train.epochs={args.epochs}",
                                 f"train.algorithm={alg}"]
                runs[name].append(run(args.pimtrain, config, sets, f"{name} seed {seed}"))
        results["accuracy"] = runs
        print(f"## Test accuracy per epoch (FP32 engine), mean over seeds {args.seeds}\n")
        header = "| epoch | " + " | ".join(n for n, _ in ALGORITHMS) + " |"
        print(header)
        print("|" + "---|" * (len(ALGORITHMS) + 1))
        for e in range(args.epochs):
            row = [statistics.mean(r[e]["test_accuracy"] for r in runs[n]) for n, _ in ALGORITHMS]
            print(f"| {e + 1} | " + " | ".join(f"{100 * v:.2f}" for v in row) + " |")
        print(f"\n## After {args.epochs} epochs\n")
        print("| algorithm | test acc. mean +- std (%) | per seed | vs backprop (points) | "
              "train loss | s/epoch (median) | time vs backprop |")
        print("|---|---|---|---|---|---|---|")
        bp_acc = mean_std([r[-1]["test_accuracy"] for r in runs["backprop"]])[0]
        bp_sec = statistics.median(l["seconds"] for r in runs["backprop"] for l in r)
        for name, _ in ALGORITHMS:
            accs = [r[-1]["test_accuracy"] for r in runs[name]]
            m, s = mean_std(accs)
            sec = statistics.median(l["seconds"] for r in runs[name] for l in r)
            loss = statistics.mean(r[-1]["train_loss"] for r in runs[name])
            per_seed = ", ".join(f"{100 * a:.2f}" for a in accs)
            print(f"| {name} | {100 * m:.2f} +- {100 * s:.2f} | {per_seed} | "
                  f"{100 * (m - bp_acc):+.2f} | {loss:.3f} | {sec:.2f} | {sec / bp_sec:.2f}x |")
        print()

    if not args.skip_macro and args.net == "mlp":
        preset = os.path.join(ROOT, "presets", "chips", "tpim.yaml")
        macro_runs = {}
        for name, alg in ALGORITHMS:
            sets = common + [f"seed={seeds[0]}", f"train.epochs={args.macro_epochs}",
                             f"train.algorithm={alg}"]
            macro_runs[name] = run(args.pimtrain, preset, sets, f"{name} on the tpim macro")
        results["macro"] = macro_runs
        print(f"## On a PIM macro (presets/chips/tpim.yaml: digital bit-serial, 8-bit inputs and "
              f"errors, every weighted layer), seed {seeds[0]}, {args.macro_epochs} epochs\n")
        print("Zero fractions of the last epoch: activations = the layer's FP inputs; errors = "
              "the layer's output error (backprop: the BP input; local error prediction: the "
              "predicted, masked error its GC uses).\n")
        print_sparsity(macro_runs)
        print("\n| algorithm | test acc. (%) | s/epoch (median) | time vs backprop | "
              "EPU shift-adds per epoch |")
        print("|---|---|---|---|---|")
        bp_sec = statistics.median(l["seconds"] for l in macro_runs["backprop"])
        for name, _ in ALGORITHMS:
            lines = macro_runs[name]
            sec = statistics.median(l["seconds"] for l in lines)
            epu = sum(layer["actions"]["backward"].get("epu_shift_adds", 0)
                      for layer in lines[-1]["layers"])
            print(f"| {name} | {100 * lines[-1]['test_accuracy']:.2f} | {sec:.2f} | "
                  f"{sec / bp_sec:.2f}x | {epu:.3g} |")
        print()

    if args.chip_epochs > 0 and args.net == "mlp":
        chip(args, seeds, results)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
