#!/usr/bin/python3
# Whole-network chip comparisons of the analog presets (ISAAC, CASCADE, Neural-PIM) from layer
# shapes, and the time `pimtrain cost PRESET --network resnet50` takes on every preset with a cost
# block (docs/fidelity.md, "Analog chips on whole networks"; bench/RESULTS.md, issue 17).
# Usage: bench/network_cost.py [--time-only] (from the repository root, after a release build).
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

PIM = "build/release/pimtrain"
NETS = ["vgg8", "vgg16", "alexnet", "resnet18", "resnet50"]
# Neural-PIM's re-scaling (8-bit inputs, 9-bit weights as differential pairs of 1-bit cells)
# for ISAAC and Neural-PIM; CASCADE at its own preset's widths (8-bit offset weights, 1-bit cells).
NP_WIDTHS = ["--set", "pim.macro.cell_bits=1", "--set", "pim.macro.weight_bits=9",
             "--set", "pim.macro.weight_encoding=differential"]


def cost(preset, net, extra=()):
    out = subprocess.run([PIM, "cost", preset, "--network", net, "--json", *extra],
                         check=True, capture_output=True, text=True).stdout
    f = json.loads(out)["operating_points"][0]["figures"]
    return f["energy_per_inference"]["value"], f["inferences_per_s_mm2"]["value"]


def gmean(v):
    return math.exp(sum(math.log(x) for x in v) / len(v))


def compare():
    rows = {}
    for n in NETS:
        rows[n] = {
            "isaac": cost("isaac", n),
            "isaac_np": cost("isaac", n, NP_WIDTHS),
            "cascade": cost("cascade", n),
            "neuralpim": cost("neuralpim", n, NP_WIDTHS),
        }
    print("| network | ISAAC uJ/inf | CASCADE uJ/inf | Neural-PIM uJ/inf | CASCADE/ISAAC energy eff."
          " | CASCADE/ISAAC inf/s/mm2 | NP/ISAAC energy eff. | NP/ISAAC inf/s/mm2 | NP/CASCADE energy"
          " eff. | NP/CASCADE inf/s/mm2 |")
    print("|---" * 11 + "|")
    ratios = {k: [] for k in range(6)}
    for n in NETS:
        r = rows[n]
        v = [r["isaac"][0] / r["cascade"][0], r["cascade"][1] / r["isaac"][1],
             r["isaac_np"][0] / r["neuralpim"][0], r["neuralpim"][1] / r["isaac_np"][1],
             r["cascade"][0] / r["neuralpim"][0], r["neuralpim"][1] / r["cascade"][1]]
        for i, x in enumerate(v):
            ratios[i].append(x)
        print(f"| {n} | {r['isaac'][0]:.4g} | {r['cascade'][0]:.4g} | {r['neuralpim'][0]:.4g} | "
              + " | ".join(f"{x:.2f}x" for x in v) + " |")
    print("| geometric mean | | | | " + " | ".join(f"{gmean(ratios[i]):.2f}x" for i in range(6))
          + " |")
    print("\nISAAC and CASCADE as shipped; Neural-PIM and its ISAAC at Neural-PIM's widths "
          "(1-bit cells, 9-bit differential weights); half-zero activations.")


def timing():
    presets = []
    for f in sorted(os.listdir("presets/chips")):
        text = open(os.path.join("presets/chips", f)).read()
        if "\ncost:" in text:
            presets.append(f[:-5])
    print(f"\nuptime: {os.popen('uptime').read().strip()}")
    print("| preset | resnet50 wall s | resnet50 CPU s | resnet18 wall s | vgg16 wall s |")
    print("|---|---|---|---|---|")
    worst = worst_cpu = 0.0
    for p in presets:
        cells = []
        for net in ["resnet50", "resnet18", "vgg16"]:
            t, cpu = [], []
            for _ in range(3):
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                subprocess.run([PIM, "cost", p, "--network", net], check=True,
                               capture_output=True)
                t.append(time.perf_counter() - t0)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            cells.append((statistics.median(t), statistics.median(cpu)))
        worst = max(worst, cells[0][0])
        worst_cpu = max(worst_cpu, cells[0][1])
        print(f"| {p} | {cells[0][0]:.2f} | {cells[0][1]:.2f} | {cells[1][0]:.2f} | "
              f"{cells[2][0]:.2f} |")
    print(f"worst ResNet-50 (median of 3 each): {worst:.2f} s wall, {worst_cpu:.2f} s CPU")


if __name__ == "__main__":
    if "--time-only" not in sys.argv:
        compare()
    timing()
