#!/usr/bin/python3
"""pimtrain's FP32 engine vs PyTorch (Debian's python3-torch) on the same networks, same data,
same hyper-parameters, same machine, same run: epoch seconds, their ratio, test accuracy.

Usage: /usr/bin/python3 bench/vs_pytorch.py [--nets mlp,cnn] [--threads 1,2] [--epochs-mlp 10]
           [--epochs-cnn 5] [--repeat 1] [--pimtrain build/release/pimtrain] [--json out.json]

Both sides: batch 64, SGD lr 0.05 momentum 0.9, cosine schedule stepped per batch, inputs
standardized with the training set's mean and std, shuffled each epoch. PyTorch gets its best
case: the data set preloaded as one tensor, batches sliced from it (no DataLoader overhead).
Epoch seconds count the training part only (no evaluation) on both sides.

On a shared machine, --repeat N runs each (net, threads) pair N times, alternating which side
goes first, and reports the median over all of a side's epochs; the ratio column is that of the
two medians and "ratio range" the lowest and highest ratio of one repetition's pair of medians.
Accuracy is the last repetition's (every repetition trains the same way).
"""
import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_data():
    xtr = read_idx(f"{DATA}/train-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    ytr = read_idx(f"{DATA}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    yte = read_idx(f"{DATA}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    mean, std = float(xtr.mean(dtype=np.float64)), float(xtr.std(dtype=np.float64))
    norm = lambda x: torch.from_numpy(((x - mean) / std).astype(np.float32)).unsqueeze(1)
    return norm(xtr), torch.from_numpy(ytr), norm(xte), torch.from_numpy(yte)


def torch_model(net):
    if net == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                             nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def run_torch(net, threads, epochs, data, seed=1):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = data
    model = torch_model(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    n, bs = xtr.shape[0], 64
    steps = math.ceil(n / bs)
    total = steps * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    loss_fn = nn.CrossEntropyLoss()
    epoch_seconds, acc = [], 0.0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n)
        t0 = time.perf_counter()
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            sched.step()
        epoch_seconds.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum())
                          for i in range(0, xte.shape[0], 1000))
        acc = correct / xte.shape[0]
    return epoch_seconds, acc


def run_pimtrain(binary, net, threads, epochs):
    with tempfile.TemporaryDirectory() as out:
        cmd = [binary, "train", os.path.join(ROOT, "configs", f"{net}.yaml"), "--out", out,
               "--set", f"threads={threads}", "--set", f"train.epochs={epochs}",
               "--set", "train.checkpoint=false"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            lines = [json.loads(l) for l in f if l.strip()]
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
    return [l["seconds"] for l in lines], summary["test_accuracy"], summary["peak_rss_bytes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="mlp,cnn")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--epochs-mlp", type=int, default=10)
    ap.add_argument("--epochs-cnn", type=int, default=5)
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build", "release", "pimtrain"))
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per (net, threads), alternating which side goes first")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    data = load_data()
    rows = []
    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, batch 64, SGD lr 0.05 m 0.9, cosine")
    hdr = f"{'net':4} {'thr':>3} {'ep':>3} {'pimtrain s/ep':>13} {'torch s/ep':>10} {'ratio':>6} " \
          f"{'ratio range':>11} {'pimtrain acc':>12} {'torch acc':>9} {'pimtrain RSS':>12}"
    print(hdr)
    for net in args.nets.split(","):
        epochs = args.epochs_mlp if net == "mlp" else args.epochs_cnn
        for t in [int(x) for x in args.threads.split(",")]:
            p_all, t_all, ratios = [], [], []
            for r in range(args.repeat):
                def pim_side():
                    return run_pimtrain(args.pimtrain, net, t, epochs)
                def torch_side():
                    return run_torch(net, t, epochs, data)
                if r % 2 == 0:
                    p_sec, p_acc, rss = pim_side()
                    t_sec, t_acc = torch_side()
                else:
                    t_sec, t_acc = torch_side()
                    p_sec, p_acc, rss = pim_side()
                p_all += p_sec
                t_all += t_sec
                ratios.append(float(np.median(p_sec)) / float(np.median(t_sec)))
            # Median epoch time: robust to one noisy epoch on a shared machine.
            pm, tm = float(np.median(p_all)), float(np.median(t_all))
            row = dict(net=net, threads=t, epochs=epochs, repeat=args.repeat, pimtrain_epoch_s=pm,
                       torch_epoch_s=tm, ratio=pm / tm, ratio_min=min(ratios),
                       ratio_max=max(ratios), pimtrain_acc=p_acc, torch_acc=t_acc,
                       pimtrain_peak_rss_mib=rss / 2**20)
            rows.append(row)
            span = f"{min(ratios):.2f}-{max(ratios):.2f}"
            print(f"{net:4} {t:3d} {epochs:3d} {pm:13.3f} {tm:10.3f} {pm / tm:6.2f} {span:>11} "
                  f"{100 * p_acc:11.2f}% {100 * t_acc:8.2f}% {rss / 2**20:9.0f} MiB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
