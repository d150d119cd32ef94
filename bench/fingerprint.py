#!/usr/bin/python3
"""Fingerprints of short training runs: a hash of the final weights (checkpoint tensors) and of
the metrics (timings and the cost block left out), per case and thread count. Two builds compute
the same numbers exactly when their fingerprints match; a build is thread-count invariant when
its rows for 1 and 2 threads match. Used for the speed work (bench/results_perf.md).

Usage: /usr/bin/python3 bench/fingerprint.py [--pimtrain build/release/pimtrain]
           [--cases mlp,cnn,tpim,tpim_cnn] [--threads 1,2]
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "mlp": ("configs/mlp.yaml", ["train.epochs=2"]),
    "cnn": ("configs/cnn.yaml", ["train.epochs=1", "data.train_limit=12000",
                                 "data.test_limit=2000"]),
    "tpim": ("presets/chips/tpim.yaml", ["train.epochs=1"]),
    "tpim_cnn": ("presets/chips/tpim_cnn.yaml", ["train.epochs=1", "data.train_limit=3000",
                                                 "data.test_limit=1000"]),
    # The analog read-out's general paths (issue 20): dataflow A with noise and a coarse ADC, B
    # and C, on the speed MLP's macro; a subset, one epoch.
    **{f"analog_{df.lower()}{bits}_{sigma}": ("configs/mlp.yaml", [
        "train.epochs=1", "data.train_limit=600", "data.test_limit=200",
        "pim.macro.impl=analog_crossbar", "pim.macro.rows=128", "pim.macro.cols=128",
        "pim.macro.input_bits=8", "pim.macro.weight_bits=8", "pim.macro.decomposition=bit_serial",
        "data.normalize=unit", "train.optimizer.learning_rate=0.01",
        "train.on_nonfinite=skip_step", f"pim.macro.dataflow={df}",
        f"pim.macro.thermal_noise.sigma={sigma}", f"pim.macro.adc.bits={bits}"])
       for df, bits, sigma in (("A", 6, 0.5), ("A", 4, 0.25), ("A", 8, 0.25), ("A", 8, 1.0),
                               ("B", 0, 0.25), ("C", 0, 0.25))},
    "isaac": ("presets/chips/isaac.yaml", ["train.epochs=1", "data.train_limit=600",
                                           "data.test_limit=200"]),
    "cascade": ("presets/chips/cascade.yaml", ["train.epochs=1", "data.train_limit=600",
                                               "data.test_limit=200"]),
    "neuralpim": ("presets/chips/neuralpim.yaml", ["train.epochs=1", "data.train_limit=600",
                                                   "data.test_limit=200"]),
    # The digital macros' encode / align / quantize paths (issue 20, item 6): the FP presets,
    # FP8 with tensor scaling, layer-wise alignment with rounding, approximate mode, aligned
    # blocks and stochastic rounding (the reference encoder); T-PIM with the nearest forward
    # read, unsigned operands and stochastic rounding.
    "isscc25": ("presets/chips/isscc25.yaml", ["train.epochs=1", "data.train_limit=6000",
                                               "data.test_limit=1000"]),
    "sppim": ("presets/chips/sppim.yaml", ["train.epochs=1", "data.train_limit=6000",
                                           "data.test_limit=1000"]),
    **{f"isscc25_{name}": ("presets/chips/isscc25.yaml", [
        "train.epochs=1", "data.train_limit=3000", "data.test_limit=500", *sets])
       for name, sets in (
           ("fp8", ["pim.macro.input_format=e4m3", "pim.macro.weight_format=e4m3",
                    "pim.macro.error_format=e5m2", "pim.macro.input_bits=0",
                    "pim.macro.weight_bits=0", "pim.macro.error_bits=0"]),
           ("layer", ["pim.macro.alignment=layer", "pim.macro.align_rounding=nearest",
                      "pim.macro.input_format=fp16", "pim.macro.input_bits=12"]),
           ("approx", ["pim.macro.mode=approximate"]),
           ("block", ["pim.macro.align_block=64", "pim.macro.output_format=fp32"]),
           ("stoch", ["pim.macro.rounding=stochastic"]),
           ("wstoch", ["pim.macro.weight_rounding=stochastic"]),
           ("int8", ["pim.macro.input_format=int8", "pim.macro.weight_format=int8",
                     "pim.macro.error_format=int8"]))},
    **{f"tpim_{name}": ("presets/chips/tpim.yaml", [
        "train.epochs=1", "data.train_limit=3000", "data.test_limit=500", *sets])
       for name, sets in (
           ("nearest", ["pim.macro.forward_weight_read=nearest"]),
           ("unsigned", ["pim.macro.signed=false", "pim.macro.weight_bits=4",
                         "pim.macro.weight_bits_backward=8", "pim.macro.input_bits=6"]),
           ("stoch", ["pim.macro.rounding=stochastic", "pim.macro.weight_rounding=stochastic"]))},
}


def fingerprint(binary, config, sets, threads):
    with tempfile.TemporaryDirectory() as out:
        cmd = [binary, "train", os.path.join(ROOT, config), "--out", out,
               "--set", f"threads={threads}"]
        for s in sets:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "checkpoint.bin"), "rb") as f:
            blob = f.read()
        header_len = int.from_bytes(blob[8:12], "little")
        weights = hashlib.sha256(blob[12 + header_len:-4]).hexdigest()[:16]
        with open(os.path.join(out, "metrics.jsonl")) as f:
            metrics = [json.loads(l) for l in f if l.strip()]
    seconds = [m["seconds"] for m in metrics]
    for m in metrics:
        for k in ("seconds", "eval_seconds", "cost"):
            m.pop(k, None)
    digest = hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest()[:16]
    return weights, digest, metrics[-1], seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build", "release", "pimtrain"))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    print(f"{'case':9} {'thr':>3} {'weights':16} {'metrics':16} {'train loss':>19} "
          f"{'test acc':>8}  epoch seconds")
    for case in args.cases.split(","):
        config, sets = CASES[case]
        for t in args.threads.split(","):
            w, m, last, sec = fingerprint(args.pimtrain, config, sets, int(t))
            print(f"{case:9} {t:>3} {w} {m} {last['train_loss']!r:>19} "
                  f"{100 * last['test_accuracy']:7.2f}%  {[round(s, 2) for s in sec]}",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
