#!/usr/bin/python3
"""Data-parallel training (docs/scaling.md): one process against `mpirun -np 2` on the same
config, in the same run. Prints per case the training seconds (metrics.jsonl, the epoch loop
without evaluation) and the wall time of each way, the speedup, and whether the checkpoint
tensors (weights, optimizer state) and metrics are the same.

Usage: /usr/bin/python3 bench/mpi_train.py [--pimtrain build/release/pimtrain] [--repeat 2]
"""
import argparse
import hashlib
import json
import os
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "tpim MLP 784-256-128-10": ("presets/chips/tpim.yaml",
                                ["train.epochs=1", "data.train_limit=6000",
                                 "data.test_limit=1000"]),
    "tpim_cnn CNN": ("presets/chips/tpim_cnn.yaml",
                     ["train.epochs=1", "data.train_limit=1000", "data.test_limit=500"]),
    "FP32 MLP (configs/mlp.yaml)": ("configs/mlp.yaml",
                                    ["train.epochs=1", "data.train_limit=20000",
                                     "data.test_limit=1000"]),
}
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]


def run(binary, config, sets, threads, ranks):
    with tempfile.TemporaryDirectory() as out:
        cmd = ([] if ranks == 0 else MPIRUN + ["-np", str(ranks)]) + [
            binary, "train", os.path.join(ROOT, config), "--out", out,
            "--set", f"threads={threads}"]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
        blob = open(os.path.join(out, "checkpoint.bin"), "rb").read()
        header = int.from_bytes(blob[8:12], "little")
        weights = hashlib.sha256(blob[12 + header:-4]).hexdigest()[:16]
        train_s = 0.0
        lines = []
        for line in open(os.path.join(out, "metrics.jsonl")):
            m = json.loads(line)
            train_s += m.pop("seconds")
            m.pop("eval_seconds")
            lines.append(m)
        metrics = hashlib.sha256(json.dumps(lines, sort_keys=True).encode()).hexdigest()[:16]
        return train_s, wall, weights, metrics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build/release/pimtrain"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cases", default=",".join(CASES))
    a = ap.parse_args()
    ways = [("1 process, 1 thread", 1, 0), ("1 process, 2 threads", 2, 0),
            ("mpirun -np 2, 1 thread each", 1, 2)]
    print(f"{'case':30} {'way':30} {'train s':>8} {'wall s':>7} {'weights':16} {'metrics':16}")
    for name in a.cases.split(","):
        config, sets = CASES[name]
        best = {}
        hashes = set()
        for _ in range(a.repeat):
            for way, threads, ranks in ways:
                t, w, wh, mh = run(a.pimtrain, config, sets, threads, ranks)
                hashes.add((wh, mh))
                best[way] = min(best.get(way, (1e9, 1e9)), (t, w))
                print(f"{name:30} {way:30} {t:8.2f} {w:7.2f} {wh} {mh}", flush=True)
        base1, base2, mpi = (best[w[0]][0] for w in ways)
        print(f"{name:30} best train s: {base1:.2f} / {base2:.2f} / {mpi:.2f}; speedup of 2 "
              f"ranks: {base1 / mpi:.2f}x vs 1 thread, {base2 / mpi:.2f}x vs 2 threads; "
              f"same checkpoint and metrics: {'yes' if len(hashes) == 1 else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
