#!/usr/bin/python3
"""PIM-QAT (charge-domain SRAM, 4-bit inputs and weights, 7-bit ADC, ADC in the training loop):
trains the preset's CNN, prints accuracy, how often the ADC clipped, the cost, and the model's
predicted figures.

    /usr/bin/python3 examples/pimqat.py [--tiny] [--out DIR] [--epochs N]
"""
import common


def main():
    args = common.parse_args("pimqat", __doc__)
    cfg = common.config_for("pimqat", args, tiny_train=64, tiny_test=32)
    run = common.train(cfg, args)
    last = run["epochs"][-1]
    print("ADC conversions and clipped codes in the last epoch, per layer:")
    for layer in last.get("layers", []):
        conv = sum(stage.get("adc_conversions", 0) for stage in layer["actions"].values())
        clipped = layer.get("saturation", {}).get("adc_clipped", 0)
        print(f"  {layer['summary']:28} {conv:14d} conversions  {clipped:10d} clipped")
    common.print_figures("pimqat", args)
    common.write_report(args)


if __name__ == "__main__":
    common.run(main)
