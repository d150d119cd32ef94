#!/usr/bin/python3
"""T-PIM (digital bit-serial SRAM PIM, all four training stages on the macro): trains the
preset's MLP on Fashion-MNIST, prints accuracy, the chip's cost, where the zeros were, and the
preset's published figures against the cost model.

    /usr/bin/python3 examples/tpim.py [--tiny] [--out DIR] [--epochs N]
"""
import common


def main():
    args = common.parse_args("tpim", __doc__)
    cfg = common.config_for("tpim", args)
    run = common.train(cfg, args)
    # T-PIM skips bit-serial cycles whose input bits are all zero: the sparsity it feeds on.
    last = run["epochs"][-1]
    print("zero fractions in the last epoch (inputs / errors / weights):")
    for layer in last.get("layers", []):
        print(f"  {layer['summary']:24} {layer['input_zero_fraction']:.3f} / "
              f"{layer['error_zero_fraction']:.3f} / {layer['weight_zero_fraction']:.3f}")
    common.print_figures("tpim", args)
    common.write_report(args)


if __name__ == "__main__":
    common.run(main)
