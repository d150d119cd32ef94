#!/usr/bin/python3
"""Times a 16-point sweep on one process and spread over MPI ranks, in the same run.

    bench/sweep_mpi.py [--pimtrain build/release/pimtrain] [--np 2] [--sweep sweeps/mpi_bench.yaml]

Runs `pimtrain sweep SWEEP --out A` (one process, one point at a time), then
`mpirun -np N pimtrain sweep SWEEP --out B` (N ranks, one point at a time each), from empty
directories, alternating the two --repeat times (default 2), and prints each wall time, the
best of each, and the ratio of the bests (the issue's target: <= 0.6 for 2 ranks). Best-of
filters out the periods when other work on the machine took the cores.
It also checks that both results files hold the same rows (apart from the wall-clock seconds).
Run from the repository root (the sweep file's paths are relative to it). The ratio depends on
how many cores are free: other work on the machine slows the MPI run more than the serial one.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def rows(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                r.pop("seconds", None)
                out.append(r)
    return out


def concurrency(sweep_dir):
    """Points in flight on average: the sum of the points' run times (point.yaml written to
    result.json written) over the span from the first start to the last end."""
    spans = []
    with open(os.path.join(sweep_dir, "results.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = os.path.join(sweep_dir, json.loads(line)["dir"])
                spans.append((os.path.getmtime(os.path.join(d, "point.yaml")),
                              os.path.getmtime(os.path.join(d, "result.json"))))
    wall = max(e for _, e in spans) - min(b for b, _ in spans)
    return sum(e - b for b, e in spans) / wall if wall > 0 else 0.0


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, env=None):
    """Wall seconds, CPU seconds (of the command and all it waited for) and output."""
    c0, t0 = cpu_seconds(), time.monotonic()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt, dc = time.monotonic() - t0, cpu_seconds() - c0
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}")
    return dt, dc, p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pimtrain", default="build/release/pimtrain")
    ap.add_argument("--np", type=int, default=2, help="MPI ranks")
    ap.add_argument("--sweep", default="sweeps/mpi_bench.yaml")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each, alternating")
    args = ap.parse_args()
    if shutil.which("mpirun") is None:
        sys.exit("mpirun not found (apt-get install openmpi-bin)")
    exe = os.path.abspath(args.pimtrain)
    work = tempfile.mkdtemp(prefix="pimtrain-sweep-mpi-")
    try:
        env = dict(os.environ, OMPI_MCA_btl_vader_single_copy_mechanism="none")
        mpirun = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(args.np)]
        if os.geteuid() == 0:
            mpirun.insert(1, "--allow-run-as-root")
        load = os.getloadavg()
        t1s, tns, same = [], [], True
        for i in range(args.repeat):
            one, many = os.path.join(work, f"one{i}"), os.path.join(work, f"mpi{i}")
            t1, c1, _ = timed([exe, "sweep", args.sweep, "--out", one])
            tn, cn, out = timed(mpirun + [exe, "sweep", args.sweep, "--out", many], env=env)
            if "MPI ranks" not in out:
                sys.exit("the MPI run did not spread the points over ranks:\n" + out[-2000:])
            r1 = rows(os.path.join(one, "results.jsonl"))
            same = same and r1 == rows(os.path.join(many, "results.jsonl"))
            print(f"run {i + 1}: 1 process {t1:.1f} s wall ({c1:.1f} s CPU, "
                  f"{concurrency(one):.2f} points in flight), {args.np} MPI ranks {tn:.1f} s wall "
                  f"({cn:.1f} s CPU, {concurrency(many):.2f} points in flight), "
                  f"ratio {tn / t1:.2f}", flush=True)
            t1s.append(t1)
            tns.append(tn)
        print(f"points: {len(r1)}; load average before {load[0]:.2f}, after "
              f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
        print(f"best: 1 process {min(t1s):.1f} s, {args.np} MPI ranks {min(tns):.1f} s")
        print(f"ratio: {min(tns) / min(t1s):.2f} (target <= 0.6)")
        print(f"same rows: {'yes' if same else 'NO'}")
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
