#!/usr/bin/python3
"""A PimLinear MLP trained from PyTorch vs the CLI's run of the same preset: test accuracy.

Usage: /usr/bin/python3 bench/py_torch_accuracy.py [--preset tpim] [--epochs 2]
           [--pimtrain build/release/pimtrain] [--threads 2] [--train-limit 0]

The CLI side is `pimtrain train PRESET --set train.epochs=E` (the binary given, or, when it is
missing, pimtrain.train() in this process: the same Session code the CLI runs). The PyTorch
side builds Flatten-PimLinear-ReLU-PimLinear-ReLU-PimLinear on the preset's macro
(pimtrain.torch), starts from the same initial weights (pimtrain.Session(...).parameters()),
reads the same normalized data in the same order (pimtrain.epoch_order), and trains with
torch.optim.SGD and the preset's cosine schedule stepped per batch: the only differences left
are PyTorch's own loss, autograd and optimizer arithmetic. Prints one table row per side.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "python")]

import pimtrain  # noqa: E402
import pimtrain.torch as pt  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


def cli_run(binary, preset_file, sets):
    if binary and os.path.exists(binary):
        with tempfile.TemporaryDirectory() as out:
            cmd = [binary, "train", preset_file, "--out", out] + \
                  [a for s in sets for a in ("--set", s)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(os.path.join(out, "metrics.jsonl")) as f:
                epochs = [json.loads(l) for l in f if l.strip()]
        return "CLI " + os.path.relpath(binary, ROOT), epochs
    run = pimtrain.train(preset_file, sets=sets)
    return "pimtrain.train (CLI binary not found)", run["epochs"]


def torch_run(cfg, threads):
    d = cfg.to_dict()
    widths = d["model"]["layers"]
    if d["model"]["impl"] != "mlp" or d["train"]["optimizer"]["impl"] != "sgd" or \
            d["train"]["schedule"]["impl"] != "cosine" or d["train"]["algorithm"]["impl"] != "backprop":
        raise SystemExit("this bench needs an MLP preset trained by backprop, SGD, cosine")
    session = pimtrain.Session(cfg)
    params = session.parameters()
    data = session.data()
    seed, epochs = d["seed"], d["train"]["epochs"]
    bs, ebs = d["train"]["batch_size"], d["train"]["eval_batch_size"]
    opt_cfg, sched = d["train"]["optimizer"], d["train"]["schedule"]
    macro = d["pim"]["macro"]
    # PyTorch's own work here is small (loss, optimizer, reshapes); one thread keeps its OpenMP
    # workers from spinning against pimtrain's pool on the same cores.
    torch.set_num_threads(1)
    pimtrain.set_threads(threads)
    # The MLP's pimtrain layers: flatten (0), then linear / relu pairs; weights (in, out).
    linear_ids = sorted({int(k.split(".")[1]) for k in params if k.endswith(".weight")})
    mods = [nn.Flatten()]
    for k, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
        lin = pt.PimLinear(i, o, macro, layer=linear_ids[k], seed=seed)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(params[f"layers.{linear_ids[k]}.weight"].T))
            lin.bias.copy_(torch.from_numpy(params[f"layers.{linear_ids[k]}.bias"]))
        lin.program(step=0)
        lin.macro_layer.reset_counts()
        mods.append(lin)
        if k + 2 < len(widths):
            mods.append(nn.ReLU())
    model = nn.Sequential(*mods)
    xtr, ytr = data["train"]
    xte, yte = data["test"]
    xtr = torch.from_numpy(xtr.reshape(len(xtr), -1))
    ytr = torch.from_numpy(ytr.astype(np.int64))
    xte = torch.from_numpy(xte.reshape(len(xte), -1))
    yte = torch.from_numpy(yte.astype(np.int64))
    opt = torch.optim.SGD(model.parameters(), lr=opt_cfg["learning_rate"],
                          momentum=opt_cfg["momentum"], weight_decay=opt_cfg["weight_decay"],
                          nesterov=opt_cfg["nesterov"])
    loss_fn = nn.CrossEntropyLoss()
    n = len(ytr)
    steps = (n + bs - 1) // bs
    rows = []
    for e in range(epochs):
        model.train()
        pt.reset_counts(model)  # each epoch's counts, priced like the CLI prices its epochs
        order = torch.from_numpy(pimtrain.epoch_order(seed, e, n))
        t0 = time.perf_counter()
        for s in range(steps):
            t = e + s / steps  # the preset's cosine (min_factor 0, no warmup), per step
            for g in opt.param_groups:
                g["lr"] = opt_cfg["learning_rate"] * 0.5 * (1 + math.cos(math.pi * t / epochs))
            idx = order[s * bs:(s + 1) * bs]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xte[i:i + ebs]).argmax(1) == yte[i:i + ebs]).sum())
                          for i in range(0, len(yte), ebs))
        rows.append({"epoch": e + 1, "test_accuracy": correct / len(yte), "seconds": seconds})
    report = pt.cost(model, cfg, samples=n, batch_size=bs) if d.get("cost") else None
    return rows, report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tpim")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=0, help="first N training samples (0: all)")
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build", "release", "pimtrain"))
    args = ap.parse_args()
    preset_file = os.path.join(ROOT, "presets", "chips", f"{args.preset}.yaml")
    sets = [f"train.epochs={args.epochs}", f"threads={args.threads}", "train.checkpoint=false",
            f"data.train_limit={args.train_limit}"]
    cfg = pimtrain.Config(preset_file, sets=sets)
    print(f"preset {args.preset}, {args.epochs} epochs, {args.threads} threads, "
          f"torch {torch.__version__}")
    name, cli_epochs = cli_run(args.pimtrain, preset_file, sets)
    torch_epochs, report = torch_run(cfg, args.threads)
    print(f"{'side':44} {'test acc':>9} {'s/epoch':>8}")
    cli_acc = cli_epochs[-1]["test_accuracy"]
    t_acc = torch_epochs[-1]["test_accuracy"]
    print(f"{name:44} {100 * cli_acc:8.2f}% {np.median([e['seconds'] for e in cli_epochs]):8.2f}")
    print(f"{'PyTorch, PimLinear MLP (pimtrain.torch)':44} {100 * t_acc:8.2f}% "
          f"{np.median([e['seconds'] for e in torch_epochs]):8.2f}")
    print(f"difference {100 * (t_acc - cli_acc):+.2f} points (target: within 0.30)")
    if report is not None and "cost" in cli_epochs[-1]:
        cli_j = cli_epochs[-1]["cost"]["energy_j"]
        print(f"last epoch's chip energy: CLI {cli_j * 1e3:.3f} mJ, PyTorch {report.energy_pj * 1e-9:.3f} mJ "
              f"({100 * (report.energy_pj * 1e-12 / cli_j - 1):+.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
