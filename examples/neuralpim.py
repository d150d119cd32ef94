#!/usr/bin/python3
"""Neural-PIM (RRAM crossbars, 4-bit DACs, NNS+A analog accumulation, one 8-bit NNADC
conversion per output, 50 dB SINAD): trains the preset's MLP through the noisy analog read-out,
prints accuracy, the cost by component, and the published ratios against ISAAC and CASCADE.

    /usr/bin/python3 examples/neuralpim.py [--tiny] [--out DIR] [--epochs N]
"""
import common


def main():
    args = common.parse_args("neuralpim", __doc__)
    # The noisy analog read-out is slow to simulate: the tiny run trains 32 samples.
    cfg = common.config_for("neuralpim", args, tiny_train=32, tiny_test=32)
    run = common.train(cfg, args)
    common.print_components(run)
    common.print_figures("neuralpim", args)
    common.write_report(args)


if __name__ == "__main__":
    common.run(main)
