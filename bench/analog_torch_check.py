#!/usr/bin/python3
"""An independent check of the analog read-out (issue 20, item 3): a second implementation of
the crossbar read-out in PyTorch, written from docs/analog.md (not from the C++ code), trains the
same MLP with the same settings as pimtrain; the two accuracies are compared over several seeds
per configuration.

The read-out, as docs/analog.md writes it ("Operands", "Read-out chains", "ADC transfer"):
- inputs quantized per tensor to sign-magnitude integers with a power-of-two scale
  (|q| <= 2^b - 1, the smallest exponent that fits max|x|), positive parts in phase 0,
  negative magnitudes in phase 1; a phase's magnitude streamed LSB first in DAC chunks of P_D
  bits;
- weights quantized symmetrically (|w| <= 2^(B-1) - 1, one power-of-two scale per matrix),
  stored as offset levels u = w + 2^(B-1) or as a differential pair (w+, w-), sliced into cells
  of P_R bits;
- dataflow A: every partial sum of a bit line over a row block (`rows` word lines), per phase,
  DAC cycle and slice, is converted by the ADC with one Gaussian draw:
  code = clamp(round_half_even((ps + sigma z) / lsb), 0, 2^bits - 1), lsb = max(1, FS / M),
  FS = rows (2^P_D - 1)(2^P_R - 1) (fixed range); codes shifted by j P_D + q P_R and added
  (phase 1 subtracted); y = 2^(e_x + e_w) (lsb sum codes - offset sum x); cycles whose block
  inputs are all zero are not applied (no conversion, no draw);
- the transposed read (error propagation) drives the same cells from the bit-line side: blocks
  of cols / (polarities x slices) weight columns, its own full range, the configured ADC bits
  (or the formula's when adc.bits is 0), the same noise;
- gradients dW = x^T dy in FP32 (digital), biases digital; SGD with momentum, cosine per step.

Nothing is shared with pimtrain but the data files: own quantizers, own noise (torch.randn), own
initialisation and shuffling (seeded per run), so the two agree only in distribution; the
comparison is of the mean test accuracy over seeds against the seed-to-seed spread.

"agree" when |mean_pimtrain - mean_torch| <= 2 * sqrt(sd_p^2 / n + sd_t^2 / n) + 0.5 points
(two standard errors of the difference plus half a point for the one test set both share), or
when both learn nothing (<= 15 %).

Usage: /usr/bin/python3 bench/analog_torch_check.py [--pimtrain build/release/pimtrain]
           [--train-limit 10000] [--test-limit 2000] [--epochs 1] [--seeds 1,2,3]
           [--lr 0.01] [--configs default|quick|all|NAME,...] [--threads 1] [--torch-threads 1]
Default: 10 000 training samples, one epoch, 2000 test samples, three seeds, lr 0.01 (the speed
grid's rate), seven configurations. On the loaded shared 2-vCPU VM (load 9-15) the default took
8 minutes for the first configuration and over 20 for a noisy one; `--train-limit 5000
--test-limit 1000` (the published table, docs/analog.md) took 1-13 minutes per configuration,
38 minutes for all seven (noise makes the PyTorch side slower); `--configs quick --seeds 1,2
--train-limit 5000 --test-limit 1000` is the few-minutes version.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "/usr/share/datasets/fashion-mnist"

# name: (macro settings, description). sigma is thermal_noise.sigma in partial-sum units (one
# cell level x one DAC level; = one LSB of the 8-bit ADC over 128 rows of 1-bit cells).
BIT_SERIAL = {"decomposition": "bit_serial", "dac_bits": 1, "cell_bits": 1, "encoding": "offset"}
DIFF22 = {"decomposition": "custom", "dac_bits": 2, "cell_bits": 2, "encoding": "differential"}
CONFIGS = {}
for _bits in (8, 6, 4):
    for _sigma in (0.0, 0.25, 0.5, 1.0):
        CONFIGS[f"A-bs-{_bits}b-s{_sigma}"] = dict(BIT_SERIAL, adc_bits=_bits, sigma=_sigma)
for _sigma in (0.0, 1.0):
    CONFIGS[f"A-diff2x2-8b-s{_sigma}"] = dict(DIFF22, adc_bits=8, sigma=_sigma)
QUICK = ["A-bs-8b-s0.25", "A-bs-6b-s0.0", "A-diff2x2-8b-s0.0"]
# The default set: seven configurations (noise at 8 bits, ADC bits without noise, the other
# decomposition); `--configs all` runs the whole 4 x 3 map plus the differential pair.
DEFAULT = ["A-bs-8b-s0.0", "A-bs-8b-s0.25", "A-bs-6b-s0.0", "A-bs-8b-s0.5", "A-bs-4b-s0.0",
           "A-diff2x2-8b-s0.0", "A-bs-8b-s1.0"]


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_data(train_limit, test_limit):
    """normalize: unit (pixels / 255), the first train_limit / test_limit samples."""
    xtr = read_idx(f"{DATA}/train-images-idx3-ubyte.gz")[:train_limit].reshape(-1, 784)
    ytr = read_idx(f"{DATA}/train-labels-idx1-ubyte.gz")[:train_limit]
    xte = read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz")[:test_limit].reshape(-1, 784)
    yte = read_idx(f"{DATA}/t10k-labels-idx1-ubyte.gz")[:test_limit]
    f = lambda x: torch.from_numpy(x.astype(np.float32) / 255.0)
    return f(xtr), torch.from_numpy(ytr.astype(np.int64)), f(xte), torch.from_numpy(yte.astype(np.int64))


# ---- the read-out, from docs/analog.md ------------------------------------------------------

def pow2_exponent(max_abs, top):
    """The smallest e with max_abs / 2^e <= top (0 for max_abs 0)."""
    if not max_abs > 0:
        return 0
    e = math.ceil(math.log2(max_abs / top))
    while math.ldexp(max_abs, -e) > top:
        e += 1
    while math.ldexp(max_abs, -(e - 1)) <= top:
        e -= 1
    return e


def quantize(v, top):
    """Sign-magnitude integers |q| <= top with one power-of-two scale: (q as float64, e)."""
    e = pow2_exponent(float(v.abs().max()), top)
    q = torch.clamp(torch.round(v.double() * math.ldexp(1.0, -e)), -top, top)
    return q, e


class Crossbar:
    """One layer's weights as the arrays store them, read in both directions (dataflow A)."""

    def __init__(self, cfg, rows=128, cols=128, input_bits=8, weight_bits=8):
        self.cfg, self.rows, self.cols = cfg, rows, cols
        self.xb, self.wb = input_bits, weight_bits
        self.pd, self.pr = cfg["dac_bits"], cfg["cell_bits"]
        self.diff = cfg["encoding"] == "differential"
        stored = weight_bits - 1 if self.diff else weight_bits
        self.pol = 2 if self.diff else 1
        self.S = (stored + self.pr - 1) // self.pr
        self.J = (input_bits + self.pd - 1) // self.pd
        self.offset = 0 if self.diff else 2 ** (weight_bits - 1)

    def program(self, w):
        """w: (k, n) FP32 weights -> levels (k, n * pol) and the dequantization exponent."""
        q, self.ew = quantize(w, 2 ** (self.wb - 1) - 1)
        if self.diff:
            lv = torch.stack([q.clamp(min=0), (-q).clamp(min=0)], dim=2).reshape(q.shape[0], -1)
        else:
            lv = q + self.offset
        self.levels = lv.to(torch.int64)  # forward: k x (n pol); transposed built from it
        self.levels_t = self.levels.reshape(q.shape[0], q.shape[1], self.pol).permute(1, 0, 2) \
            .reshape(q.shape[1], -1)      # n x (k pol)

    def adc(self, block):
        bits = self.cfg["adc_bits"]
        if bits == 0:  # the dataflow-A formula
            n = math.ceil(math.log2(block))
            bits = self.pr + self.pd + n if (self.pr > 1 and self.pd > 1) else self.pr + self.pd - 1 + n
        M = 2 ** bits - 1
        fs = block * (2 ** self.pd - 1) * (2 ** self.pr - 1)
        return M, max(1.0, fs / M)

    def read(self, x, transposed):
        """y = the analog read-out of x (m x k) through the stored weights."""
        levels = self.levels_t if transposed else self.levels
        block = max(1, self.cols // (self.pol * self.S)) if transposed else self.rows
        M, lsb = self.adc(block)
        sigma = self.cfg["sigma"]
        xq, ex = quantize(x, 2 ** self.xb - 1)
        m, k = xq.shape
        ncp = levels.shape[1]
        nb = (k + block - 1) // block
        pad = nb * block - k
        # Cells: (S, nb, block, ncp), slice q = (level >> q P_R) & (2^P_R - 1).
        lv = torch.nn.functional.pad(levels, (0, 0, 0, pad))
        cells = torch.stack([(lv >> (q * self.pr)) & (2 ** self.pr - 1) for q in range(self.S)])
        cells = cells.reshape(self.S, nb, block, ncp).permute(1, 2, 0, 3).reshape(nb, block, -1)
        cells = cells.float()
        # DAC chunks: (nb, 2 phases x J cycles x m, block).
        xi = torch.nn.functional.pad(xq, (0, pad)).to(torch.int64)
        parts = [xi.clamp(min=0), (-xi).clamp(min=0)]
        chunks = torch.stack([(p >> (j * self.pd)) & (2 ** self.pd - 1)
                              for p in parts for j in range(self.J)])      # (2J, m, nb*block)
        chunks = chunks.reshape(2 * self.J, m, nb, block).permute(2, 0, 1, 3)  # (nb, 2J, m, blk)
        applied = (chunks != 0).any(dim=3)                                  # (nb, 2J, m)
        # Only the (phase, cycle) pairs some sample applies are computed (the others are all
        # skipped: e.g. phase 1 of ReLU activations); skipped cycles give no conversion.
        keep = torch.nonzero(applied.any(dim=2).any(dim=0)).flatten()
        chunks, applied = chunks[:, keep], applied[:, keep]
        P = keep.numel()
        chunks = chunks.reshape(nb, P * m, block).float()
        ps = torch.bmm(chunks, cells).reshape(nb, P, m, self.S, ncp)  # exact integers
        if sigma > 0:
            ps.add_(torch.randn_like(ps), alpha=sigma)
        if lsb != 1.0:
            ps.div_(lsb)
        codes = ps.round_().clamp_(0, M)
        # Shift-add: +-2^(j P_D + q P_R), phase 1 subtracted: over slices in float (exact:
        # sum_q 2^(q P_R) code < 2^16 for these widths), over cycles and blocks in double.
        # Skipped cycles (no conversion) are masked after the slice sum (the same, S x fewer).
        sq = torch.tensor([2.0 ** (q * self.pr) for q in range(self.S)])
        per_cycle = torch.matmul(sq, codes.reshape(nb * P * m, self.S, ncp)).reshape(nb, P, m, ncp)
        per_cycle.mul_(applied[:, :, :, None])
        sh = torch.tensor([(1 if h == 0 else -1) * 2.0 ** (j * self.pd)
                           for h in range(2) for j in range(self.J)], dtype=torch.float64)[keep]
        acc = torch.einsum("bpmc,p->mc", per_cycle.double(), sh)             # (m, ncp)
        acc = acc * lsb
        if self.diff:
            acc = acc[:, 0::2] - acc[:, 1::2]
        else:
            acc = acc - self.offset * xq.sum(dim=1, keepdim=True)
        return (acc * math.ldexp(1.0, ex + self.ew)).float()


def train_torch(cfg, data, seed, epochs, lr, batch=64, layers=(784, 256, 128, 10)):
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = data
    ws, bs = [], []
    for i, o in zip(layers[:-1], layers[1:]):
        bound = 1.0 / math.sqrt(i)
        ws.append((torch.rand(i, o) * 2 - 1) * bound)
        bs.append((torch.rand(o) * 2 - 1) * bound)
    vel = [torch.zeros_like(p) for p in ws + bs]
    xbars = [Crossbar(cfg) for _ in ws]
    n = xtr.shape[0]
    steps = math.ceil(n / batch)

    def forward(x, keep):
        acts = [x]
        for li, (xb, b) in enumerate(zip(xbars, bs)):
            y = xb.read(acts[-1], transposed=False) + b
            if li + 1 < len(xbars):
                y = torch.relu(y)
            acts.append(y)
        return acts if keep else acts[-1]

    for xb, w in zip(xbars, ws):
        xb.program(w)
    for epoch in range(epochs):
        perm = torch.randperm(n)
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            x, y = xtr[idx], ytr[idx]
            acts = forward(x, True)
            logits = acts[-1]
            if not torch.isfinite(logits).all():
                return float("nan")
            p = torch.softmax(logits, dim=1)
            d = p.clone()
            d[torch.arange(len(y)), y] -= 1
            d /= len(y)
            grads_w, grads_b = [None] * len(ws), [None] * len(ws)
            for li in reversed(range(len(ws))):
                grads_w[li] = acts[li].t() @ d
                grads_b[li] = d.sum(dim=0)
                if li > 0:  # error propagation through the array (transposed read)
                    d = xbars[li].read(d, transposed=True) * (acts[li] > 0)
            factor = 0.5 * (1 + math.cos(math.pi * (epoch + s / steps) / epochs))
            for i, (p_, g) in enumerate(zip(ws + bs, grads_w + grads_b)):
                vel[i].mul_(0.9).add_(g)
                p_.sub_(lr * factor * vel[i])
            for xb, w in zip(xbars, ws):
                xb.program(w)
    correct = 0
    with torch.no_grad():
        for i in range(0, xte.shape[0], 250):
            correct += int((forward(xte[i:i + 250], False).argmax(1) == yte[i:i + 250]).sum())
    return correct / xte.shape[0]


# ---- pimtrain ---------------------------------------------------------------------------------

def start_pimtrain(binary, cfg, seed, args):
    """Starts one pimtrain run in the background (it trains while PyTorch does)."""
    sets = ["train.checkpoint=false", f"train.epochs={args.epochs}", f"seed={seed}",
            f"threads={args.threads}", "data.normalize=unit",
            f"data.train_limit={args.train_limit}", f"data.test_limit={args.test_limit}",
            f"train.optimizer.learning_rate={args.lr}",
            "pim.macro.impl=analog_crossbar", "pim.macro.rows=128", "pim.macro.cols=128",
            "pim.macro.input_bits=8", "pim.macro.weight_bits=8", "pim.macro.dataflow=A",
            f"pim.macro.decomposition={cfg['decomposition']}",
            f"pim.macro.thermal_noise.sigma={cfg['sigma']}",
            f"pim.macro.adc.bits={cfg['adc_bits']}"]
    if cfg["decomposition"] == "custom":
        sets += [f"pim.macro.dac_bits={cfg['dac_bits']}", f"pim.macro.cell_bits={cfg['cell_bits']}",
                 f"pim.macro.weight_encoding={cfg['encoding']}"]
    out = tempfile.TemporaryDirectory()
    cmd = [binary, "train", os.path.join(ROOT, "configs", "mlp.yaml"), "--out", out.name]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, out, seed


def finish_pimtrain(run):
    proc, out, seed = run
    _, err = proc.communicate()
    with out:
        if proc.returncode != 0:
            last = err.strip().splitlines()[-1] if err.strip() else str(proc.returncode)
            print(f"    pimtrain seed {seed} stopped: {last[:200]}", flush=True)
            return float("nan")
        with open(os.path.join(out.name, "summary.json")) as f:
            return json.load(f)["test_accuracy"]


def stats(v):
    """Mean and sd in points; a run that stopped (NaN) counts as chance, 10 %."""
    a = np.array([0.10 if math.isnan(x) else x for x in v]) * 100
    return a.mean(), (a.std(ddof=1) if len(a) > 1 else 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build", "release", "pimtrain"))
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--test-limit", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--configs", default="default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    names = {"all": list(CONFIGS), "quick": QUICK, "default": DEFAULT}.get(
        args.configs, args.configs.split(","))
    for nm in names:
        if nm not in CONFIGS:
            print(f"--configs: unknown configuration '{nm}' (known: {', '.join(CONFIGS)}, or "
                  f"default, quick, all)", file=sys.stderr)
            sys.exit(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    data = load_data(args.train_limit, args.test_limit)
    print(f"MLP 784-256-128-10, 8b inputs x 8b weights, 128-row arrays, dataflow A, fixed ADC "
          f"range, {args.train_limit} training samples, {args.epochs} epoch(s), lr {args.lr}, "
          f"batch 64, seeds {args.seeds}, test {args.test_limit}", flush=True)
    rows = []
    for nm in names:
        cfg = CONFIGS[nm]
        t0 = time.time()
        pim, tor = [], []
        for s in seeds:  # pimtrain (one thread by default) runs while PyTorch trains
            run = start_pimtrain(args.pimtrain, cfg, s, args)
            tor.append(train_torch(cfg, data, s, args.epochs, args.lr))
            pim.append(finish_pimtrain(run))
        (mp, sp), (mt, st) = stats(pim), stats(tor)
        se = math.sqrt(sp ** 2 / len(seeds) + st ** 2 / len(seeds))
        agree = abs(mp - mt) <= 2 * se + 0.5 or (mp <= 15 and mt <= 15)
        rows.append((nm, mp, sp, mt, st, agree))
        print(f"{nm:<20} pimtrain {mp:6.2f} +- {sp:4.2f}  torch {mt:6.2f} +- {st:4.2f}  "
              f"{'agree' if agree else 'DISAGREE'}   (runs: pimtrain "
              f"{' '.join(f'{100 * a:.2f}' for a in pim)}; torch "
              f"{' '.join(f'{100 * a:.2f}' for a in tor)}; {time.time() - t0:.0f} s)",
              flush=True)
    print("\n| config | pimtrain % (mean +- sd) | torch % (mean +- sd) | difference | agree |")
    print("|---|---|---|---|---|")
    for nm, mp, sp, mt, st, agree in rows:
        print(f"| {nm} | {mp:.2f} +- {sp:.2f} | {mt:.2f} +- {st:.2f} | {mp - mt:+.2f} | "
              f"{'yes' if agree else 'NO'} |")
    print(f"\n{sum(r[5] for r in rows)} of {len(rows)} configurations agree")


if __name__ == "__main__":
    main()
