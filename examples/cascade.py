#!/usr/bin/python3
"""CASCADE-style analog buffering (partial sums of equal significance summed in buffer arrays,
one conversion per buffer line): trains the preset's MLP, prints accuracy, the conversions
saved against ISAAC's per-cycle dataflow, the cost by component, and the model's predictions.

    /usr/bin/python3 examples/cascade.py [--tiny] [--out DIR] [--epochs N]
"""
import common
import pimtrain


def main():
    args = common.parse_args("cascade", __doc__)
    cfg = common.config_for("cascade", args, tiny_train=32, tiny_test=32)
    mine = pimtrain.Macro(cfg).hardware_params()
    per_cycle = pimtrain.Macro(dict(cfg["pim"]["macro"], dataflow="A")).hardware_params()
    print(f"conversions per weight group: {mine['conversions_per_group']:.0f} buffered "
          f"({mine['adc_bits']:.0f}-bit ADC) vs {per_cycle['conversions_per_group']:.0f} "
          f"per cycle ({per_cycle['adc_bits']:.0f}-bit)")
    run = common.train(cfg, args)
    common.print_components(run)
    common.print_figures("cascade", args)
    common.write_report(args)


if __name__ == "__main__":
    common.run(main)
