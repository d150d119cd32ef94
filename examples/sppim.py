#!/usr/bin/python3
"""SP-PIM (local error prediction, super-pipelined, double-buffered BF16 macros): trains the
preset's MLP with errors predicted locally, prints accuracy, the chip's cost per stage (the
error prediction unit's share included), and the published figures against the model.

    /usr/bin/python3 examples/sppim.py [--tiny] [--out DIR] [--epochs N]
"""
import common


def main():
    args = common.parse_args("sppim", __doc__)
    cfg = common.config_for("sppim", args)
    run = common.train(cfg, args)
    cost = run["cost"]
    if cost is not None:
        print("energy by stage of the last epoch:")
        for stage, v in cost["by_stage"].items():
            print(f"  {stage:12} {v['energy']['value'] * 1e-6:12.4f} uJ  {v['cycles']['value']:14.0f} cycles")
        print(f"schedule {cost['schedule']}, off-chip traffic {cost['offchip_traffic']['value'] / 8e6:.3f} MB")
    common.print_figures("sppim", args)
    common.write_report(args)


if __name__ == "__main__":
    common.run(main)
