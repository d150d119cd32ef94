#!/usr/bin/python3
"""ISSCC 2025 14.5 (floating-point digital CIM, BF16 with vector-wise pre-alignment): first the
macro on its own from NumPy (BF16 product error against FP32, forward and transposed reads),
then the preset's MLP trained on it, with accuracy, cost and the published figures.

    /usr/bin/python3 examples/isscc25.py [--tiny] [--out DIR] [--epochs N]
"""
import numpy as np

import common
import pimtrain


def macro_demo(cfg):
    block = cfg["pim"]["macro"]
    macro = pimtrain.Macro(block)
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((256, 128)) * 0.05).astype(np.float32)
    x = rng.random((64, 256)).astype(np.float32)
    dy = (rng.standard_normal((64, 128)) * 0.01).astype(np.float32)
    macro.program(w)
    for name, got, want in (("forward  x W", macro.multiply(x), x @ w),
                            ("transposed dy W^T", macro.multiply(dy, transposed=True), dy @ w.T)):
        err = np.linalg.norm(got - want) / np.linalg.norm(want)
        print(f"  {name:18} relative error vs FP32 {err:.2e}")
    counts = macro.counts()
    print(f"  {len(counts)} kinds of action counted, e.g. macs {counts.get('macs', 0)}")


def main():
    args = common.parse_args("isscc25", __doc__)
    cfg = common.config_for("isscc25", args)
    print("the preset's macro on NumPy arrays (256 x 128 weights, batch 64):")
    macro_demo(cfg)
    common.train(cfg, args)
    common.print_figures("isscc25", args)
    common.write_report(args)


if __name__ == "__main__":
    common.run(main)
