#!/usr/bin/python3
"""ISAAC-style ReRAM crossbars (2-bit cells, 1-bit DAC cycles, an ADC conversion per bit-line
partial sum per cycle): trains the preset's MLP, prints accuracy, the ADC resolution the
dataflow needs and how many conversions training took, the cost, and the tile-power check.

    /usr/bin/python3 examples/isaac.py [--tiny] [--out DIR] [--epochs N]
"""
import common
import pimtrain


def main():
    args = common.parse_args("isaac", __doc__)
    cfg = common.config_for("isaac", args, tiny_train=32, tiny_test=32)
    hw = pimtrain.Macro(cfg).hardware_params()
    print(f"dataflow A: {hw['adc_bits']:.0f}-bit ADC forward, {hw['adc_bits_transposed']:.0f}-bit "
          f"transposed, {hw['conversions_per_group']:.0f} conversions per weight group")
    run = common.train(cfg, args)
    last = run["epochs"][-1]
    total = {}
    for layer in last.get("layers", []):
        for stage, actions in layer["actions"].items():
            total[stage] = total.get(stage, 0) + actions.get("adc_conversions", 0)
    print("ADC conversions in the last epoch by stage: " +
          ", ".join(f"{s} {n}" for s, n in total.items() if n))
    common.print_figures("isaac", args)
    common.write_report(args)


if __name__ == "__main__":
    common.run(main)
