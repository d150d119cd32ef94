#!/usr/bin/python3
"""Data-parallel training (docs/scaling.md): one process against `mpirun -np 2` on the same
config, interleaved in the same run. Prints per case and way the training seconds
(metrics.jsonl, the epoch loop without evaluation), the wall time and the CPU seconds of the
whole run (user + sys of every process) and of the busiest process (a rank's critical path, what the
wall time would be with a free core per rank), whether the checkpoint tensors (weights, optimizer
state) and metrics are the same, and per case the medians over the repeats and the speedup of
2 ranks (1-process median / 2-rank median).

Usage: /usr/bin/python3 bench/mpi_train.py [--pimtrain build/release/pimtrain] [--repeat 3]
          [--cases NAME,...] [--ways 1t,2t,2r]
"""
import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH32 = ("data={impl: synthetic, height: 32, width: 32, channels: 3, classes: 10, "
           "train_size: %d, test_size: 64}")
CASES = {
    "tpim MLP 784-256-128-10": ("presets/chips/tpim.yaml",
                                ["train.epochs=1", "data.train_limit=6000",
                                 "data.test_limit=1000"]),
    "tpim_cnn CNN": ("presets/chips/tpim_cnn.yaml",
                     ["train.epochs=1", "data.train_limit=1000", "data.test_limit=500"]),
    "FP32 MLP (configs/mlp.yaml)": ("configs/mlp.yaml",
                                    ["train.epochs=1", "data.train_limit=20000",
                                     "data.test_limit=1000"]),
    # A graph model (residual additions, batch norm between the convs) on T-PIM's macro.
    "resnet20 on T-PIM (graph)": ("presets/chips/tpim.yaml",
                                  ["model={preset: resnet20}", "data.size=32", "data.channels=3",
                                   "train.epochs=1", "data.train_limit=256",
                                   "data.test_limit=64", "train.eval_batch_size=64"]),
    # NeuroSim's training benchmark, bit-accurate on T-PIM, on the synthetic 32x32x3 set.
    "vgg8 on T-PIM (synthetic 32x32x3)": ("presets/chips/tpim.yaml",
                                          ["model={preset: vgg8}", SYNTH32 % 128,
                                           "train.epochs=1", "train.eval_batch_size=64"]),
}
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]


def run(binary, config, sets, threads, ranks):
    with tempfile.TemporaryDirectory() as out:
        # Each process under a wrapper that records its own CPU seconds (rank_cpu below).
        cmd = ([] if ranks == 0 else MPIRUN + ["-np", str(ranks)]) + [
            sys.executable, "-c", RANK_CPU, os.path.join(out, "cpu"),
            binary, "train", os.path.join(ROOT, config), "--out", out,
            "--set", f"threads={threads}"]
        for s in sets:
            cmd += ["--set", s]
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
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
        busiest = max(float(open(os.path.join(out, f)).read())
                      for f in os.listdir(out) if f.startswith("cpu."))
        return train_s, wall, cpu, busiest, weights, metrics


# argv: PREFIX COMMAND...: runs COMMAND and writes its user + sys CPU seconds to PREFIX.RANK.
RANK_CPU = """
import os, resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
open(sys.argv[1] + "." + rank, "w").write(str(r.ru_utime + r.ru_stime))
sys.exit(rc)
"""

WAYS = {"1t": ("1 process, 1 thread", 1, 0), "2t": ("1 process, 2 threads", 2, 0),
        "2r": ("mpirun -np 2, 1 thread each", 1, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build/release/pimtrain"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--ways", default="1t,2t,2r")
    a = ap.parse_args()
    ways = [WAYS[w] for w in a.ways.split(",")]
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"{'case':36} {'way':30} {'train s':>8} {'wall s':>7} {'cpu s':>7} {'busiest':>7} "
          f"{'weights':16} {'metrics':16}")
    for name in a.cases.split(","):
        config, sets = CASES[name]
        times = {}
        hashes = set()
        for _ in range(a.repeat):  # the ways interleaved, repeat by repeat
            for way, threads, ranks in ways:
                t, w, c, b, wh, mh = run(a.pimtrain, config, sets, threads, ranks)
                hashes.add((wh, mh))
                times.setdefault(way, []).append((t, c, b))
                print(f"{name:36} {way:30} {t:8.2f} {w:7.2f} {c:7.2f} {b:7.2f} {wh} {mh}",
                      flush=True)
        med = {w: statistics.median(x[0] for x in v) for w, v in times.items()}
        cpu = {w: statistics.median(x[1] for x in v) for w, v in times.items()}
        busy = {w: statistics.median(x[2] for x in v) for w, v in times.items()}
        summary = "; ".join(f"{w}: {med[w]:.2f} s (cpu {cpu[w]:.2f} s, busiest process "
                            f"{busy[w]:.2f} s)" for w in med)
        speed = ""
        mpi = WAYS["2r"][0]
        if mpi in med:
            speed = "; 2 ranks: " + ", ".join(
                f"{med[w] / med[mpi]:.2f}x vs {w}" for w in med if w != mpi)
        print(f"{name:36} median train s over {a.repeat}: {summary}{speed}; same checkpoint "
              f"and metrics: {'yes' if len(hashes) == 1 else 'NO'} "
              f"({'/'.join(sorted(h[0] for h in hashes))}); {os.popen('uptime').read().strip()}",
              flush=True)


if __name__ == "__main__":
    main()
