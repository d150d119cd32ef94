"""What every example shares: its command line, tiny data for tests, training a preset through
the pimtrain module with a line per epoch, the cost printout, the preset's paper-vs-model
figures, and the run's report when this build has `pimtrain report`."""
import argparse
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import pimtrain
except ImportError:  # not installed: use the source tree and the release build
    sys.path[:0] = [os.path.join(ROOT, "python"), os.path.join(ROOT, "build", "release", "python")]
    import pimtrain
import pimtrain.testing


def parse_args(preset, doc):
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("--tiny", action="store_true",
                    help="train 1 epoch on a tiny generated data set (seconds; for tests)")
    ap.add_argument("--out", default=os.path.join("runs", f"example-{preset}"),
                    help="run directory (config, metrics, checkpoint, summary, report)")
    ap.add_argument("--epochs", type=int, default=0, help="epochs (default: the preset's)")
    ap.add_argument("--threads", type=int, default=0, help="worker threads (default: the preset's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any other override, as pimtrain train --set")
    ap.add_argument("--no-report", action="store_true",
                    help="skip the HTML report (pimtrain report, where this build has it)")
    return ap.parse_args()


def config_for(preset, args, tiny_train=128, tiny_test=64):
    """The preset with the example's overrides (tiny data, epochs, threads, --set)."""
    sets = []
    if args.tiny:
        data_dir = os.path.join(args.out, "tiny-data")
        pimtrain.testing.write_tiny_mnist(data_dir, n_train=tiny_train, n_test=tiny_test)
        sets += [f"data.dir={os.path.abspath(data_dir)}", "train.epochs=1",
                 f"train.eval_batch_size={tiny_test}"]
    if args.epochs:
        sets.append(f"train.epochs={args.epochs}")
    if args.threads:
        sets.append(f"threads={args.threads}")
    return pimtrain.Config(preset, sets=sets + args.set)


def print_epoch(m):
    print(f"epoch {m['epoch']:3d}  loss {m['train_loss']:.4f}  train {100 * m['train_accuracy']:.2f}%"
          f"  test {100 * m['test_accuracy']:.2f}%  {m['seconds']:.2f} s", flush=True)


def train(cfg, args):
    d = cfg.to_dict()
    print(f"{d.get('name', '?')}: {' '.join(d.get('description', '').split())}")
    session = pimtrain.Session(cfg)
    print(session.summary, end="")
    run = session.train(out_dir=args.out, on_epoch=print_epoch)
    print(f"test accuracy: {100 * run['test_accuracy']:.2f}% after {len(run['epochs'])} epoch(s)")
    if run["cost_report"] is not None:
        print(run["cost_report"].headline())
        print(run["cost_report"].table(), end="")
    return run


def print_components(run):
    """The last epoch's energy by component, largest first (nothing when the run has no cost)."""
    report = run["cost_report"]
    if report is None:
        return
    print("energy of the last epoch by component:")
    for comp, pj in sorted(report.energy_by_component.items(), key=lambda kv: -kv[1]):
        print(f"  {comp:28} {pj * 1e-6:12.4f} uJ")


def print_figures(preset, args):
    """The preset's published figures against the cost model (pimtrain cost PRESET): a
    property of the chip, so of the preset as published (not of the run's overrides)."""
    if args.tiny:
        print(f"published figures: skipped with --tiny (pimtrain.chip_cost('{preset}'))")
        return None
    figures = pimtrain.chip_cost(preset)
    if not figures["expected"]:
        return figures
    print("published figures vs the model:")
    for e in figures["expected"]:
        paper = "prediction" if e["paper"] is None else f"paper {e['paper']:.4g}"
        print(f"  {e['figure']:20} {e['unit']:11} model {e['model']:10.4g}  {paper}"
              f"  ({e['operating_point']})")
    return figures


def write_report(args):
    """Runs `pimtrain report OUT` when this build has that command; optional."""
    out_dir = args.out
    if args.no_report:
        return None
    cli = os.environ.get("PIMTRAIN_CLI") or shutil.which("pimtrain") or \
        os.path.join(ROOT, "build", "release", "pimtrain")
    if not os.path.exists(cli):
        print("report: skipped (no pimtrain binary)")
        return None
    probe = subprocess.run([cli, "--help"], capture_output=True, text=True)
    if not re.search(r"^\s+report\s", probe.stdout, re.M):
        print("report: skipped (this build has no `pimtrain report`)")
        return None
    r = subprocess.run([cli, "report", out_dir], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"report: failed: {r.stderr.strip()}")
        return None
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else f"report: {out_dir}")
    return out_dir


def run(main):
    """Runs an example's main: a mistake in the input is one line on stderr and exit code 2,
    as with the pimtrain command."""
    try:
        sys.exit(main())
    except pimtrain.Error as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)
