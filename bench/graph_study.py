#!/usr/bin/python3
"""Graph models: resnet20 and vit_tiny on Fashion-MNIST, pimtrain's FP32 engine and T-PIM's
macro (presets/chips/tpim.yaml) side by side with PyTorch running the same network in this
script; epoch-time ratio against PyTorch at equal threads; the interop path
(pimtrain.torch.convert of the PyTorch network) against the same network from the CLI.

Usage: /usr/bin/python3 bench/graph_study.py [--nets resnet20,vit_tiny] [--threads 1,2]
          [--train 1000] [--test 1000] [--epochs 2] [--vit-train 5000] [--vit-epochs 3]
          [--tpim-train 1000] [--interop-train 256] [--skip-tpim] [--skip-interop]
          [--repeat 3] [--pimtrain build/release/pimtrain] [--json out.json]

The same data on every side: the first --train training and --test test images; resnet20 reads
them padded to 32x32 and replicated to 3 channels (data.size: 32, channels: 3), vit_tiny as
28x28x1; standardized with the training subset's per-channel mean and std (pimtrain's
normalize: standard, computed here the same way). Same hyper-parameters: batch 64, cosine
schedule per batch; resnet20 SGD lr 0.05 momentum 0.9, vit_tiny Adam lr 0.002. Epoch seconds
count training only. Initial weights differ between the two frameworks (each its own
generator), so accuracies agree statistically, not bitwise. The CPU is shared: the headline
ratio is the worst (largest) pimtrain/PyTorch ratio over the thread counts.
"""
import argparse
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_data(n_train, n_test, size, channels):
    """NCHW float tensors, as pimtrain's fashion_mnist with size/channels and normalize standard."""
    xtr = read_idx(f"{DATA}/train-images-idx3-ubyte.gz")[:n_train]
    ytr = read_idx(f"{DATA}/train-labels-idx1-ubyte.gz")[:n_train].astype(np.int64)
    xte = read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz")[:n_test]
    yte = read_idx(f"{DATA}/t10k-labels-idx1-ubyte.gz")[:n_test].astype(np.int64)
    if size:
        p = (size - 28) // 2
        pad = lambda x: np.pad(x, ((0, 0), (p, size - 28 - p), (p, size - 28 - p)))
        xtr, xte = pad(xtr), pad(xte)
    xtr = xtr.astype(np.float64) / 255.0
    xte = xte.astype(np.float64) / 255.0
    mean, std = xtr.mean(), xtr.std()
    norm = lambda x: torch.from_numpy(((x - mean) / std).astype(np.float32)).unsqueeze(1).repeat(
        1, channels, 1, 1).contiguous()
    return norm(xtr), torch.from_numpy(ytr), norm(xte), torch.from_numpy(yte)


# ---- the same networks in PyTorch (presets/models/resnet20.yaml, vit_tiny.yaml) ----

class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet20(nn.Module):
    def __init__(self, cin=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        blocks, c = [], 16
        for width, stride in [(16, 1), (32, 2), (64, 2)]:
            for k in range(3):
                blocks.append(Basic(c, width, stride if k == 0 else 1))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class VitBlock(nn.Module):
    def __init__(self, d, heads, mlp):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, mlp), nn.GELU(), nn.Linear(mlp, d))

    def forward(self, x):
        h = self.n1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.n2(x))


class VitTiny(nn.Module):
    def __init__(self, d=64, heads=4, mlp=128, blocks=2, patch=7, tokens=16):
        super().__init__()
        self.patches = nn.Conv2d(1, d, patch, patch)
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens, d))
        self.blocks = nn.Sequential(*[VitBlock(d, heads, mlp) for _ in range(blocks)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        t = self.patches(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(t)).mean(1))


SEED = 1  # --seed: pimtrain's seed and torch.manual_seed

NETS = {
    "resnet20": dict(size=32, channels=3, torch=ResNet20,
                     optimizer={"impl": "sgd", "learning_rate": 0.05, "momentum": 0.9}),
    "vit_tiny": dict(size=0, channels=1, torch=VitTiny,
                     optimizer={"impl": "adam", "learning_rate": 0.002}),
}


def make_opt(model, spec):
    if spec["impl"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=spec["learning_rate"],
                               momentum=spec["momentum"])
    return torch.optim.Adam(model.parameters(), lr=spec["learning_rate"])


def run_torch(model, spec, threads, epochs, data, seed=None):
    torch.set_num_threads(threads)
    torch.manual_seed(SEED if seed is None else seed)
    xtr, ytr, xte, yte = data
    opt = make_opt(model, spec)
    n, bs = xtr.shape[0], 64
    steps = math.ceil(n / bs)
    total = steps * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    seconds, acc = [], 0.0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n)
        t0 = time.perf_counter()
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            sched.step()
        seconds.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xte[i:i + 500]).argmax(1) == yte[i:i + 500]).sum())
                          for i in range(0, xte.shape[0], 500))
        acc = correct / xte.shape[0]
    return seconds, acc


def _import_pimtrain():
    sys.path[:0] = [os.path.join(ROOT, "python"), os.path.join(ROOT, "build", "release", "python")]
    import pimtrain
    return pimtrain


def load_pim_state(model, params):
    """Copies pimtrain's tensors (Session.parameters(): layers.<node>.<name>) into the PyTorch
    module. The parameterized nodes of the graph (conv2d, batch_norm, linear) come in the same
    order as the module's Conv2d / BatchNorm2d / Linear (a residual block's body, then its
    shortcut). conv2d stores W as (kh * kw * c, oc), torch as (oc, c, kh, kw); linear (in, out)
    vs torch's (out, in)."""
    by_node = {}
    for k, v in params.items():
        _, node, name = k.split(".", 2)
        by_node.setdefault(int(node), {})[name] = np.asarray(v)
    nodes = [by_node[i] for i in sorted(by_node)]
    mods = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    if len(nodes) != len(mods):
        raise SystemExit(f"{len(nodes)} parameterized pimtrain nodes vs {len(mods)} torch modules")
    with torch.no_grad():
        for t, m in zip(nodes, mods):
            if isinstance(m, nn.Conv2d):
                oc, c, kh, kw = m.weight.shape
                w = t["weight"].reshape(kh, kw, c, oc).transpose(3, 2, 0, 1)
                m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                if m.bias is not None:
                    m.bias.copy_(torch.from_numpy(t["bias"]))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.from_numpy(np.ascontiguousarray(t["weight"].T)))
                m.bias.copy_(torch.from_numpy(t["bias"]))
            else:
                m.weight.copy_(torch.from_numpy(t["gamma"]))
                m.bias.copy_(torch.from_numpy(t["beta"]))
                m.running_mean.copy_(torch.from_numpy(t["running_mean"]))
                m.running_var.copy_(torch.from_numpy(t["running_var"]))


def run_matched(net, n_train, n_test, epochs, threads, seed):
    """Both sides from one pimtrain Session: PyTorch gets pimtrain's initial weights, its data
    tensors (NHWC -> NCHW) and its epoch order (pimtrain.epoch_order); then the session itself
    trains (in this process, the CLI's code). Returns per-step losses and accuracies of both,
    and the accuracy of both at the initial weights (eval mode: batch-norm running stats)."""
    pimtrain = _import_pimtrain()
    global SEED
    saved, SEED = SEED, seed
    cfg = pim_config(net, n_train, n_test, epochs, threads, False)
    SEED = saved
    session = pimtrain.Session(cfg)
    data = session.data()
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))
    xtr, ytr = to_t(data["train"][0]), torch.from_numpy(np.asarray(data["train"][1]).astype(np.int64))
    xte, yte = to_t(data["test"][0]), torch.from_numpy(np.asarray(data["test"][1]).astype(np.int64))
    spec = NETS[net]
    model = spec["torch"](spec["channels"]) if net == "resnet20" else spec["torch"]()
    load_pim_state(model, session.parameters())
    torch.set_num_threads(threads)
    opt = make_opt(model, spec["optimizer"])
    n, bs = xtr.shape[0], 64
    steps = math.ceil(n / bs)
    total = steps * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))

    def evaluate():
        model.eval()
        with torch.no_grad():
            return sum(int((model(xte[i:i + 500]).argmax(1) == yte[i:i + 500]).sum())
                       for i in range(0, xte.shape[0], 500)) / xte.shape[0]

    torch_init_acc = evaluate()
    pim_init_acc = session.evaluate()["accuracy"]
    torch_losses = []
    for epoch in range(epochs):
        model.train()
        perm = torch.from_numpy(np.asarray(pimtrain.epoch_order(seed, epoch, n)).astype(np.int64))
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            sched.step()
            torch_losses.append(float(loss))
    torch_acc = evaluate()
    # pimtrain: per-step losses from the running means that on_progress reports.
    pim_losses, prev = [], [0.0, 0]

    def progress(step, steps_, mean, _acc):
        seen = min(n, step * bs)
        if step == 1:
            prev[0], prev[1] = 0.0, 0
        pim_losses.append((mean * seen - prev[0]) / (seen - prev[1]))
        prev[0], prev[1] = mean * seen, seen

    summary = session.train(on_progress=progress)
    return {"torch_losses": torch_losses, "pim_losses": pim_losses, "torch_acc": torch_acc,
            "pim_acc": summary["test_accuracy"], "torch_init_acc": torch_init_acc,
            "pim_init_acc": pim_init_acc}


def pim_config(net, n_train, n_test, epochs, threads, tpim):
    spec = NETS[net]
    data = {"impl": "fashion_mnist", "train_limit": n_train, "test_limit": n_test}
    if spec["size"]:
        data.update(size=spec["size"], channels=spec["channels"])
    cfg = {"seed": SEED, "threads": threads, "data": data, "model": {"preset": net},
           "train": {"epochs": epochs, "batch_size": 64, "checkpoint": False,
                     "optimizer": spec["optimizer"], "schedule": {"impl": "cosine"}}}
    if tpim:
        with open(os.path.join(ROOT, "presets", "chips", "tpim.yaml")) as f:
            chip = yaml.safe_load(f)
        cfg["pim"] = {"macro": chip["pim"]["macro"]}
        cfg["cost"] = chip["cost"]
    return cfg


def run_pimtrain(binary, cfg):
    with tempfile.TemporaryDirectory() as out:
        path = os.path.join(out, "cfg.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        subprocess.run([binary, "train", path, "--out", out + "/run"], check=True,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "run", "metrics.jsonl")) as f:
            lines = [json.loads(l) for l in f if l.strip()]
        with open(os.path.join(out, "run", "summary.json")) as f:
            summary = json.load(f)
    return [l["seconds"] for l in lines], summary["test_accuracy"], lines, summary


def attention_share(summary):
    """Share of the run's priced energy (T-PIM's cost model) in the attention nodes: the Q, K, V
    and output projections, plus the Q K^T and A V products when they run on the macro."""
    names = [n["name"] for n in summary["graph"]]
    total = att = 0.0
    for entry in summary["cost"]["by_layer_stage"]:
        e = entry["energy"]["value"]
        total += e
        if "self_attention" in names[entry["layer"]]:
            att += e
    return att / total if total else 0.0


def with_macro_products(cfg):
    """The vit_tiny preset's model block with products: macro in every self_attention block."""
    with open(os.path.join(ROOT, "presets", "models", "vit_tiny.yaml")) as f:
        model = yaml.safe_load(f)["model"]
    for node in model["nodes"]:
        for b in node.get("body", []):
            if b.get("impl") == "self_attention":
                b["products"] = "macro"
    cfg["model"] = model
    return cfg


def interop(binary, threads, n_train):
    """resnet20 on T-PIM for one epoch: converted PyTorch module vs the CLI, same samples."""
    sys.path[:0] = [os.path.join(ROOT, "python"), os.path.join(ROOT, "build", "release", "python")]
    import pimtrain
    import pimtrain.torch as pt
    data = load_data(n_train, 64, 32, 3)
    model = ResNet20()
    pt.convert(model, os.path.join(ROOT, "presets", "chips", "tpim.yaml"))
    # The macro products run on pimtrain's pool (`threads` workers); torch's own ops get one
    # thread, as docs/python.md advises: two pools of `threads` each oversubscribe the cores.
    pimtrain.set_threads(threads)
    sec_py, _ = run_torch(model, NETS["resnet20"]["optimizer"], 1, 1, data)
    sec_cli, _, _, _ = run_pimtrain(binary, pim_config("resnet20", n_train, 64, 1, threads, True))
    return sec_py[0], sec_cli[0]


def accuracy_seeds(a):
    """resnet20 (or the first of --nets) at several seeds: pimtrain, PyTorch matched (pimtrain's
    initial weights, data tensors and order) and PyTorch native (torch.manual_seed(seed): its
    own init and randperm order); per-step training losses of the matched pair compared."""
    net = a.nets.split(",")[0]
    spec = NETS[net]
    t = max(int(x) for x in a.threads.split(","))
    seeds = [int(x) for x in a.accuracy_seeds.split(",")]
    data = load_data(a.train, a.test, spec["size"], spec["channels"])
    print(f"{net}, {a.train} train / {a.test} test, {a.epochs} epochs, {t} thread(s)")
    print("| seed | init acc pimtrain / torch | step-1 loss pimtrain / torch | max rel. loss diff "
          "steps 1-5 | pimtrain | PyTorch matched | PyTorch native |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for seed in seeds:
        m = run_matched(net, a.train, a.test, a.epochs, t, seed)
        torch.manual_seed(seed)
        model = spec["torch"](spec["channels"]) if net == "resnet20" else spec["torch"]()
        _, native = run_torch(model, spec["optimizer"], t, a.epochs, data, seed)
        k = min(5, len(m["pim_losses"]))
        rel = max(abs(p - q) / abs(q) for p, q in zip(m["pim_losses"][:k], m["torch_losses"][:k]))
        rows.append((m["pim_acc"], m["torch_acc"], native))
        print(f"| {seed} | {100 * m['pim_init_acc']:.1f} / {100 * m['torch_init_acc']:.1f} | "
              f"{m['pim_losses'][0]:.6f} / {m['torch_losses'][0]:.6f} | {rel:.2e} | "
              f"{100 * m['pim_acc']:.2f} | {100 * m['torch_acc']:.2f} | {100 * native:.2f} |",
              flush=True)
        if a.json:
            with open(a.json + f".seed{seed}", "w") as f:
                json.dump({**m, "torch_native_acc": native}, f)
    cols = list(zip(*rows))
    stat = lambda c: (f"{100 * statistics.mean(c):.2f} (min {100 * min(c):.2f}, max "
                      f"{100 * max(c):.2f}, sd {100 * statistics.pstdev(c):.2f})")
    print(f"| mean of {len(seeds)} | | | | {stat(cols[0])} | {stat(cols[1])} | {stat(cols[2])} |")
    print(f"pimtrain - PyTorch matched: {100 * (statistics.mean(cols[0]) - statistics.mean(cols[1])):+.2f}"
          f" points; pimtrain - PyTorch native: "
          f"{100 * (statistics.mean(cols[0]) - statistics.mean(cols[2])):+.2f} points")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", default="resnet20,vit_tiny")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--vit-train", type=int, default=5000)
    ap.add_argument("--vit-epochs", type=int, default=3)
    ap.add_argument("--tpim-train", type=int, default=1000)
    ap.add_argument("--interop-train", type=int, default=256)
    ap.add_argument("--skip-tpim", action="store_true")
    ap.add_argument("--skip-interop", action="store_true")
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build", "release", "pimtrain"))
    ap.add_argument("--repeat", type=int, default=1,
                    help="interleaved repeats of each pair; medians are reported")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--accuracy-seeds",
                    help="e.g. 1,2,3: per seed, pimtrain vs PyTorch from pimtrain's initial "
                         "weights and data order (matched) and vs PyTorch's own (seeded); then "
                         "exit")
    ap.add_argument("--json")
    a = ap.parse_args()
    global SEED
    SEED = a.seed
    if a.accuracy_seeds:
        return accuracy_seeds(a)
    threads = [int(t) for t in a.threads.split(",")]
    results = {}
    print("| net | train / test | epochs | threads | pimtrain FP32 s/epoch | PyTorch s/epoch | "
          "ratio | acc FP32 | acc PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for net in a.nets.split(","):
        spec = NETS[net]
        n_train = a.train if net == "resnet20" else a.vit_train
        epochs = a.epochs if net == "resnet20" else a.vit_epochs
        data = load_data(n_train, a.test, spec["size"], spec["channels"])
        r = results.setdefault(net, {"train": n_train, "test": a.test, "epochs": epochs,
                                     "threads": {}})
        for t in threads:
            # Alternate which side goes first (the machine is shared).
            runs = {"pim": [], "torch": []}
            for rep in range(a.repeat):
                order = [0, 1] if (t + rep) % 2 else [1, 0]
                for side in order:
                    if side == 0:
                        sec, acc, _, _ = run_pimtrain(
                            a.pimtrain, pim_config(net, n_train, a.test, epochs, t, False))
                        runs["pim"].append((min(sec), acc))
                    else:
                        torch.manual_seed(SEED)  # the initial weights too
                        sec, acc = run_torch(spec["torch"](spec["channels"]) if net == "resnet20"
                                             else spec["torch"](), spec["optimizer"], t, epochs,
                                             data)
                        runs["torch"].append((min(sec), acc))
                print(f"  {net} {t} thread(s) repeat {rep + 1}: pimtrain {runs['pim'][-1][0]:.2f} "
                      f"s, PyTorch {runs['torch'][-1][0]:.2f} s; "
                      f"{os.popen('uptime').read().strip()}",
                      flush=True)
            # Medians over the repeats (pimtrain's accuracy is the same every repeat: one seed).
            out = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
                   for k, v in runs.items()}
            ratio = out["pim"][0] / out["torch"][0]
            r["threads"][t] = {"pim_s": out["pim"][0], "torch_s": out["torch"][0], "ratio": ratio,
                               "pim_acc": out["pim"][1], "torch_acc": out["torch"][1]}
            print(f"| {net} | {n_train} / {a.test} | {epochs} | {t} | {out['pim'][0]:.2f} | "
                  f"{out['torch'][0]:.2f} | {ratio:.2f} | {100 * out['pim'][1]:.1f} | "
                  f"{100 * out['torch'][1]:.1f} |", flush=True)
        r["worst_ratio"] = max(v["ratio"] for v in r["threads"].values())
    if not a.skip_tpim:
        print("\n| net | attention products | train / test | epochs | threads | T-PIM s/epoch | "
              "acc T-PIM | attention share of energy |")
        print("|---|---|---|---|---|---|---|---|")
        for net in a.nets.split(","):
            n_train = min(a.tpim_train, results[net]["train"])
            epochs = results[net]["epochs"]
            t = max(threads)
            for products in (["digital", "macro"] if net == "vit_tiny" else ["-"]):
                cfg = pim_config(net, n_train, a.test, epochs, t, True)
                if products == "macro":
                    cfg = with_macro_products(cfg)
                sec, acc, _, summary = run_pimtrain(a.pimtrain, cfg)
                share = attention_share(summary) if net == "vit_tiny" else 0.0
                results[net].setdefault("tpim", {})[products] = {
                    "train": n_train, "s": min(sec), "acc": acc, "attention_share": share}
                print(f"| {net} | {products} | {n_train} / {a.test} | {epochs} | {t} | "
                      f"{min(sec):.2f} | {100 * acc:.1f} | "
                      f"{'%.3f' % share if net == 'vit_tiny' else '-'} |", flush=True)
    if not a.skip_interop:
        t = max(threads)
        py, cli = interop(a.pimtrain, t, a.interop_train)
        results["interop"] = {"train": a.interop_train, "threads": t, "torch_convert_s": py,
                              "cli_s": cli, "ratio": py / cli}
        print(f"\ninterop, resnet20 on T-PIM, {a.interop_train} samples, {t} threads: "
              f"pimtrain.torch.convert {py:.2f} s/epoch, CLI {cli:.2f} s/epoch, ratio "
              f"{py / cli:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
