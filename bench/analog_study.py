#!/usr/bin/python3
"""Analog crossbar study (issue 4): (a) a digitally quantization-aware trained CNN deployed
naively on the analog macro vs (b) PIM-QAT, for ADC bits 3..8, clean and with thermal noise +
ADC non-linearity; a SINAD sweep; and the speed of one MLP training epoch on the analog macro
against PyTorch FP32 (measured in the same run).

Usage: /usr/bin/python3 bench/analog_study.py [--pimtrain build/release/pimtrain]
           [--epochs 3] [--finetune-epochs 1] [--train-limit 0] [--test-limit 0]
           [--bits 3,4,5,6,7,8] [--skip-accuracy] [--skip-speed] [--threads 2]
           [--noise-bits 4] [--finetune-limit 5000] [--qat-from DIR] [--work DIR]
           [--finetune-lr 0.002] [--calibrate-every 20] [--calib-batch 1024]
           [--set KEY=VALUE ...] [--speed-repeat 1] [--compare OTHER_PIMTRAIN]

Network: the foundation CNN (configs/cnn.yaml) with 4-bit weights and 4-bit activations on the
pimqat preset's macro (4-bit DAC inputs, 1-bit weight cells, offset column, 512-row arrays,
dataflow A). Digital QAT = pim_qat with adc_in_loop false (the ideal quantized product in FP,
straight-through BP). Naive = that checkpoint evaluated on the analog macro with the ADC's
hardware range. PIM-QAT = fine-tuned from the QAT checkpoint with the ADC in the loop, then
deployed with pim_qat's calibrate mode (ADC range + gain, BN statistics). Peer = the same
fine-tune without the ADC (digital QAT trained as long as PIM-QAT).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
PRESET = os.path.join(ROOT, "presets", "chips", "pimqat.yaml")
NONIDEAL = ["pim.macro.thermal_noise.sigma=2.0", "pim.macro.adc.inl_lsb=0.5"]


def run(binary, cmd, sets, out=None):
    full = [binary] + cmd + (["--out", out] if out else [])
    for s in sets:
        full += ["--set", s]
    r = subprocess.run(full, check=True, capture_output=True, text=True)
    return r.stdout


def train(binary, sets, out):
    run(binary, ["train", PRESET], sets, out)
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)["test_accuracy"]


def evaluate(binary, sets, ckpt):
    text = run(binary, ["eval", PRESET, "--checkpoint", ckpt], sets)
    return float(text.split("test accuracy:")[1].split("%")[0]) / 100.0


def accuracy_study(args, base):
    b = args.pimtrain
    tmp = args.work or tempfile.mkdtemp(prefix="analog_study_")
    os.makedirs(tmp, exist_ok=True)
    print(f"runs in {tmp}", flush=True)
    qat = os.path.join(tmp, "qat")
    t0 = time.time()
    if args.qat_from:
        # Reuse a digital-QAT run made with the same base settings (e.g. an earlier invocation).
        qat = args.qat_from
        with open(os.path.join(qat, "summary.json")) as f:
            dig = json.load(f)["test_accuracy"]
    else:
        dig = train(b, base + [f"train.epochs={args.epochs}",
                               "train.algorithm.adc_in_loop=false"], qat)
    print(f"digital QAT (4b w / 4b a, ideal product), {args.epochs} epochs: "
          f"{100 * dig:.2f}%  ({time.time() - t0:.0f} s)", flush=True)
    rows = []
    # Deployment calibration: mode=calibrate on the first calib_limit training samples, in
    # batches of calib_batch (the ADC range and gain are fitted on the first batch; a fully
    # connected layer sees one row per sample, so a 64-sample batch gives it only 64 rows).
    deploy = ["train.epochs=1", "train.algorithm.mode=calibrate",
              f"data.train_limit={args.calib_limit}",
              f"train.batch_size={min(args.calib_batch, args.calib_limit)}"]
    print(f"{'ADC':>4} {'cond':>9} {'naive fixed':>11} {'naive cal':>9} {'PIM-QAT':>8}"
          f" {'QAT-naive':>9} {'QAT-PIMQAT':>10}", flush=True)
    for cond, extra, bit_list in (("clean", [], args.bits),
                                  ("noise+INL", NONIDEAL, args.noise_bits)):
        for bits in bit_list:
            t0 = time.time()
            adc = [f"pim.macro.adc.bits={bits}"] + extra
            # (a) naive: the digital model on the macro, ADC at its hardware full range.
            naive = evaluate(b, base + adc + ["pim.macro.adc.range=fixed"], qat)
            # (a') naive with the ADC range calibrated (no retraining): separates the range from
            # the training.
            cal_dir = os.path.join(tmp, f"cal_{cond}_{bits}")
            naive_cal = train(b, base + adc + deploy + [f"train.algorithm.init_from={qat}"],
                              cal_dir)
            # (b) PIM-QAT: fine-tune with the ADC in the loop, then calibrate for deployment.
            ft = os.path.join(tmp, f"ft_{cond}_{bits}")
            ft_limit = [f"data.train_limit={args.finetune_limit}"] if args.finetune_limit else []
            ft_sets = ft_limit + [f"train.epochs={args.finetune_epochs}",
                                  f"train.algorithm.init_from={qat}",
                                  f"train.optimizer.learning_rate={args.finetune_lr}"]
            pimqat_own = train(b, base + adc + ft_sets + [
                f"train.algorithm.calibrate_every={args.calibrate_every}"], ft)
            # The digital peer: the same fine-tune (epochs, samples, rate, seed) without the ADC,
            # so both sides have trained equally long.
            peer = train(b, base + adc + ft_sets + ["train.algorithm.adc_in_loop=false"],
                         os.path.join(tmp, f"peer_{cond}_{bits}"))
            dep = os.path.join(tmp, f"dep_{cond}_{bits}")
            pimqat = train(b, base + adc + deploy + [f"train.algorithm.init_from={ft}"], dep)
            rows.append((bits, cond, naive, naive_cal, pimqat))
            print(f"{bits:>4} {cond:>9} {100 * naive:10.2f}% {100 * naive_cal:8.2f}% "
                  f"{100 * pimqat:7.2f}% {100 * (dig - naive):8.2f}p {100 * (dig - pimqat):9.2f}p"
                  f"  peer {100 * peer:.2f}% (peer - PIM-QAT {100 * (peer - pimqat):.2f}p; "
                  f"PIM-QAT with its training calibration {100 * pimqat_own:.2f}%)"
                  f"  ({time.time() - t0:.0f} s)", flush=True)
    print("\nSINAD sweep (ADC 8 bits, range calibrated, QAT model, lumped output noise):")
    print(f"{'SINAD dB':>8} {'accuracy':>9}")
    for db in args.sinad:
        d = os.path.join(tmp, f"sinad_{db}")
        acc = train(b, base + ["pim.macro.adc.bits=8", f"pim.macro.sinad.db={db}"] + deploy +
                    [f"train.algorithm.init_from={qat}"], d)
        print(f"{db:>8} {100 * acc:8.2f}%", flush=True)


def speed_study(args):
    """Rounds of: PyTorch FP32 at each thread count, then each pimtrain binary at each thread
    count (the binaries alternate within a round, so a drifting machine slows both alike).
    Prints every measurement, each round's ratio and the best over the rounds."""
    import vs_pytorch  # noqa: E402  (Debian's python3-torch)
    data = vs_pytorch.load_data()
    binaries = [args.pimtrain] + ([args.compare] if args.compare else [])
    sets = ["train.checkpoint=false", "train.epochs=1",
            "pim.macro.impl=analog_crossbar", "pim.macro.rows=128", "pim.macro.cols=128",
            "pim.macro.input_bits=8", "pim.macro.weight_bits=8",
            "pim.macro.decomposition=bit_serial", "pim.macro.dataflow=A",
            "pim.macro.thermal_noise.sigma=0.25", "pim.macro.adc.bits=8",
            "data.normalize=unit"]
    best_torch, best_pim = None, {b: None for b in binaries}
    for rnd in range(args.speed_repeat):
        # Wall-clock epoch seconds are the figure; CPU seconds (whole process: training,
        # evaluation, start-up) are printed too, to show how much load stretched the wall clock.
        torch_s = None
        for t in args.speed_threads:
            c0 = time.process_time()
            secs, _ = vs_pytorch.run_torch("mlp", t, 2, data)
            s = min(secs)
            print(f"[round {rnd + 1}] PyTorch FP32 MLP epoch, {t} thread(s): {s:.2f} s "
                  f"(2 epochs + evaluation: {time.process_time() - c0:.1f} CPU s)", flush=True)
            torch_s = s if torch_s is None else min(torch_s, s)
        best_torch = torch_s if best_torch is None else min(best_torch, torch_s)
        for binary in binaries:
            pim_s = None
            for t in args.speed_threads:
                c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                with tempfile.TemporaryDirectory() as out:
                    run(binary, ["train", os.path.join(ROOT, "configs", "mlp.yaml")],
                        sets + [f"threads={t}"], out)
                    with open(os.path.join(out, "metrics.jsonl")) as f:
                        line = json.loads(f.readline())
                s = line["seconds"]
                conv = sum(l["actions"][st].get("adc_conversions", 0) for l in line["layers"]
                           for st in ("forward", "backward"))
                c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
                print(f"[round {rnd + 1}] {binary}: analog MLP epoch, {t} thread(s): {s:.2f} s, "
                      f"{conv / 1e9:.2f} G ADC conversions ({conv / s / 1e9:.2f} G/s), test acc "
                      f"{100 * line['test_accuracy']:.2f}% (1 epoch + evaluation: {cpu:.1f} CPU s)",
                      flush=True)
                pim_s = s if pim_s is None else min(pim_s, s)
            best_pim[binary] = pim_s if best_pim[binary] is None else min(best_pim[binary], pim_s)
            print(f"[round {rnd + 1}] {binary}: best analog epoch / best PyTorch FP32 epoch: "
                  f"{pim_s / torch_s:.2f}x (target <= 3x)", flush=True)
    for binary in binaries:
        print(f"best over {args.speed_repeat} round(s), {binary}: {best_pim[binary]:.2f} s / "
              f"{best_torch:.2f} s = {best_pim[binary] / best_torch:.2f}x (target <= 3x)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pimtrain", default=os.path.join(ROOT, "build", "release", "pimtrain"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--train-limit", type=int, default=0)
    ap.add_argument("--test-limit", type=int, default=0)
    ap.add_argument("--calib-limit", type=int, default=2048)
    # 1024: at seed 2 a 256-sample calibration batch cost 0.86 points (bench/results_analog.md).
    ap.add_argument("--calib-batch", type=int, default=1024,
                    help="batch size of the deployment calibration runs")
    ap.add_argument("--finetune-lr", type=float, default=0.002)
    ap.add_argument("--calibrate-every", type=int, default=20,
                    help="steps between ADC range/gain calibrations in the PIM-QAT fine-tune")
    ap.add_argument("--bits", default="3,4,5,6,7,8")
    ap.add_argument("--noise-bits", default=None,
                    help="ADC bits for the noise+INL rows (default: --bits)")
    ap.add_argument("--finetune-limit", type=int, default=0,
                    help="training samples for the PIM-QAT fine-tune (default: --train-limit)")
    ap.add_argument("--qat-from", default="",
                    help="reuse this digital-QAT run directory instead of training one")
    ap.add_argument("--work", default="", help="keep the runs in this directory")
    ap.add_argument("--set", action="append", default=[], dest="extra_sets",
                    help="extra pimtrain --set override for every accuracy run (repeatable)")
    ap.add_argument("--sinad", default="20,30,40,50,60")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-threads", default="1,2")
    ap.add_argument("--speed-repeat", type=int, default=1,
                    help="rounds of the speed study (PyTorch and pimtrain alternating)")
    ap.add_argument("--compare", default="",
                    help="a second pimtrain binary timed in the same rounds (before / after)")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    args.bits = [int(v) for v in args.bits.split(",")]
    # --noise-bits "" runs no noise+INL rows.
    args.noise_bits = (args.bits if args.noise_bits is None
                       else [int(v) for v in args.noise_bits.split(",") if v])
    args.sinad = [int(v) for v in args.sinad.split(",") if v]
    args.speed_threads = [int(v) for v in args.speed_threads.split(",")]
    base = [f"threads={args.threads}", "train.checkpoint=true"]
    if args.train_limit:
        base.append(f"data.train_limit={args.train_limit}")
    if args.test_limit:
        base.append(f"data.test_limit={args.test_limit}")
    base += args.extra_sets
    if not args.skip_accuracy:
        accuracy_study(args, base)
    if not args.skip_speed:
        speed_study(args)


if __name__ == "__main__":
    main()
