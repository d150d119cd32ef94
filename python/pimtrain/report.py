#!/usr/bin/python3
"""HTML report of a pimtrain training run or sweep, with plots drawn by matplotlib.

`pimtrain report DIR` runs this script (docs/report.md); it also works on its own:

    /usr/bin/python3 python/pimtrain/report.py RUN_DIR --out REPORT_DIR

and as a module (`report.write_report(run_dir, out_dir)`, imported as `pimtrain.report` or, with
python/pimtrain on sys.path, as plain `report`). It needs only the standard library and
matplotlib (Debian's python3-matplotlib), not the compiled pimtrain module. It reads what a
run writes (metrics.jsonl, summary.json, config.yaml; see src/pimtrain/sim/session.cc) or what
a sweep writes (results.jsonl, results.csv; docs/sweeps.md), and writes REPORT_DIR/index.html with its PNGs beside it (the page embeds them as well, so it can
be moved or mailed alone).

A user error (no such directory, not a run, a truncated file, matplotlib missing) is one line on
stderr, "pimtrain: error: ...", and exit code 2; nothing is left half-written: the page is built
in a temporary directory that replaces REPORT_DIR only when complete.
"""

import argparse
import base64
import csv
import html
import json
import math
import os
import shutil
import sys
import tempfile

# Run as a script (`pimtrain report` does), Python puts this file's folder first on sys.path,
# where the package's own torch.py and testing.py would shadow the real modules of those names
# for anything imported below (matplotlib imports modules lazily). Drop it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

STAGES = ["forward", "backward", "gradient", "update"]
STAGE_LABELS = {
    "forward": "FP (forward)",
    "backward": "BP (error propagation)",
    "gradient": "GC (gradient calculation)",
    "update": "WU (weight update)",
}
OPERAND_COLORS = {"input": "#4C72B0", "error": "#DD8452", "weight": "#55A868"}
STAGE_COLORS = {"forward": "#4C72B0", "backward": "#DD8452", "gradient": "#55A868",
                "update": "#C44E52"}
# Metric columns of a sweep's results, with how to show them.
SWEEP_METRICS = [
    ("test_accuracy", "test accuracy (%)", 100.0),
    ("energy_j", "energy (J)", 1.0),
    ("latency_s", "latency (s)", 1.0),
    ("tops_per_watt", "efficiency (TOPS/W)", 1.0),
]


class ReportError(Exception):
    """A problem with the input: reported as one line, exit code 2."""


# ----------------------------------------------------------------------------------------------
# Reading

def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ReportError(f"{path}: missing")
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read ({e})")


def read_jsonl(path, required=()):
    """The JSON objects of a .jsonl file; a line cut short or malformed is a ReportError."""
    text = _read_text(path)
    if text and not text.endswith("\n"):
        raise ReportError(f"{path}:{text.count(chr(10)) + 1}: truncated (the last line has no "
                          "end; the file was cut short)")
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise ReportError(f"{path}:{n}: not a JSON object (malformed line)")
        if not isinstance(row, dict):
            raise ReportError(f"{path}:{n}: not a JSON object")
        for key in required:
            if key not in row:
                raise ReportError(f"{path}:{n}: no '{key}' (not a pimtrain file)")
        rows.append(row)
    return rows


def detect_kind(run_dir):
    if os.path.isfile(os.path.join(run_dir, "results.jsonl")):
        return "sweep"
    if os.path.isfile(os.path.join(run_dir, "metrics.jsonl")) or \
            os.path.isfile(os.path.join(run_dir, "config.yaml")):
        return "run"
    raise ReportError(f"{run_dir}: not a pimtrain run (no metrics.jsonl, config.yaml) or sweep "
                      "directory (no results.jsonl)")


def load_run(run_dir):
    metrics = read_jsonl(os.path.join(run_dir, "metrics.jsonl"),
                         required=("epoch", "train_loss", "train_accuracy", "test_loss",
                                   "test_accuracy"))
    if not metrics:
        raise ReportError(f"{run_dir}/metrics.jsonl: no epochs")
    config_text = _read_text(os.path.join(run_dir, "config.yaml"))
    summary = None
    summary_path = os.path.join(run_dir, "summary.json")
    if os.path.isfile(summary_path):
        try:
            summary = json.loads(_read_text(summary_path))
        except ValueError:
            raise ReportError(f"{summary_path}: malformed (truncated or not JSON)")
    return {"dir": run_dir, "metrics": metrics, "summary": summary, "config_text": config_text,
            "config": (summary or {}).get("config") or {},
            "devices": load_optional_json(run_dir, "devices.json"),
            "drift": load_optional_json(run_dir, "drift.json")}


def load_sweep(sweep_dir):
    rows = read_jsonl(os.path.join(sweep_dir, "results.jsonl"), required=("point", "status"))
    if not rows:
        raise ReportError(f"{sweep_dir}/results.jsonl: no points")
    # The varied keys: the CSV's columns before `status` (in the sweep file's order); without a
    # CSV, the row keys that are neither metrics nor bookkeeping.
    keys = []
    csv_path = os.path.join(sweep_dir, "results.csv")
    if os.path.isfile(csv_path):
        with open(csv_path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if "status" in header:
            keys = header[:header.index("status")]
    if not keys:
        fixed = {"point", "status", "seconds", "dir", "config_crc", "error"}
        fixed.update(m[0] for m in SWEEP_METRICS)
        for r in rows:
            for k in r:
                if k not in fixed and k not in keys:
                    keys.append(k)
    return {"dir": sweep_dir, "rows": rows, "keys": keys}


# ----------------------------------------------------------------------------------------------
# Formatting

def si(value, unit):
    """1.23e-4, "J" -> "123 uJ"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if value == 0:
        return f"0 {unit}"
    prefixes = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"),
                (1e-6, "\u00b5"), (1e-9, "n"), (1e-12, "p")]
    for scale, p in prefixes:
        if abs(value) >= scale * 0.9995:
            return f"{value / scale:.4g} {p}{unit}"
    return f"{value:.3g} {unit}"


def si_scale(values):
    """A (scale, prefix) that shows the largest of `values` between 1 and 1000."""
    top = max((abs(v) for v in values if v is not None), default=0)
    for scale, p in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"),
                     (1e-6, "\u00b5"), (1e-9, "n"), (1e-12, "p")]:
        if top >= scale:
            return scale, p
    return 1e-12, "p"


def esc(text):
    return html.escape(str(text))


def table(header, rows, classes=None):
    out = ["<table>"]
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def fig_value(block, key):
    """summary.json figures are {"value": v, "unit": u}."""
    v = block.get(key) if isinstance(block, dict) else None
    if isinstance(v, dict):
        return v.get("value")
    return v


# ----------------------------------------------------------------------------------------------
# Plots

class Figures:
    """Saves matplotlib figures as PNGs in the output directory and remembers them."""

    def __init__(self, out_dir):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ReportError(f"matplotlib is not installed for {sys.executable} "
                              "(apt-get install python3-matplotlib)")
        self.plt = plt
        self.out_dir = out_dir
        self.files = []
        plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "axes.grid": True,
                             "grid.alpha": 0.3, "font.size": 10, "axes.titlesize": 11,
                             "legend.fontsize": 9, "axes.spines.top": False,
                             "axes.spines.right": False})

    def new(self, width=7.0, height=4.0, cols=1):
        return self.plt.subplots(1, cols, figsize=(width, height), squeeze=False)

    def save(self, fig, name, alt):
        path = os.path.join(self.out_dir, name)
        fig.tight_layout()
        fig.savefig(path)
        self.plt.close(fig)
        self.files.append(name)
        with open(path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        # The page embeds the image (self-contained) and links the PNG beside it.
        return (f'<figure><a href="{esc(name)}"><img src="data:image/png;base64,{data}" '
                f'alt="{esc(alt)}" data-file="{esc(name)}"></a>'
                f'<figcaption>{esc(alt)}</figcaption></figure>')


def plot_curves(figs, metrics):
    epochs = [m["epoch"] for m in metrics]
    fig, axes = figs.new(11, 4, cols=2)
    ax = axes[0][0]
    ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train (mean over the epoch)")
    ax.plot(epochs, [m["test_loss"] for m in metrics], "s--", label="test (after the epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (cross-entropy, nats per sample)")
    ax.set_title("Loss")
    ax.legend()
    ax = axes[0][1]
    ax.plot(epochs, [100 * m["train_accuracy"] for m in metrics], "o-",
            label="train (mean over the epoch)")
    ax.plot(epochs, [100 * m["test_accuracy"] for m in metrics], "s--",
            label="test (after the epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy")
    ax.legend()
    for a in axes[0]:
        a.xaxis.get_major_locator().set_params(integer=True)
        if len(epochs) == 1:
            a.set_xlim(epochs[0] - 1, epochs[0] + 1)
    return figs.save(fig, "curves.png", "Training and test loss and accuracy per epoch")


def plot_lr(figs, metrics):
    epochs = [m["epoch"] for m in metrics]
    fig, axes = figs.new(5.5, 3.2)
    ax = axes[0][0]
    ax.plot(epochs, [m.get("learning_rate", float("nan")) for m in metrics], "o-", color="#8172B3")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate (at the epoch's last step)")
    ax.set_title("Learning-rate schedule")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return figs.save(fig, "learning_rate.png", "Learning rate at the end of each epoch")


def _stage_bars(ax, labels, per_stage, unit_scale, ylabel, title):
    """Stacked bars: one bar per label, one segment per stage."""
    bottom = [0.0] * len(labels)
    x = list(range(len(labels)))
    for stage in STAGES:
        vals = [per_stage.get(stage, [0.0] * len(labels))[i] / unit_scale for i in x]
        if not any(vals):
            continue
        ax.bar(x, vals, bottom=bottom, color=STAGE_COLORS[stage], label=STAGE_LABELS[stage],
               width=0.6)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=0 if len(labels) <= 4 else 20, ha="center"
                       if len(labels) <= 4 else "right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()


def plot_cost(figs, cost):
    """Energy and latency per stage, layer and component of the last epoch."""
    parts = []
    freq_mhz = fig_value(cost.get("operating_point", {}), "frequency") or 0
    by_stage = cost.get("by_stage", {})
    stages = [s for s in STAGES if s in by_stage] + [s for s in by_stage if s not in STAGES]

    # Per stage: energy and time.
    energy = [fig_value(by_stage[s], "energy") or 0 for s in stages]
    cycles = [fig_value(by_stage[s], "cycles") or 0 for s in stages]
    if stages:
        fig, axes = figs.new(11, 3.8, cols=2)
        es, ep = si_scale([e * 1e-12 for e in energy])
        ax = axes[0][0]
        ax.bar([STAGE_LABELS.get(s, s) for s in stages], [e * 1e-12 / es for e in energy],
               color=[STAGE_COLORS.get(s, "#999999") for s in stages], width=0.6)
        ax.set_ylabel(f"energy ({ep}J per epoch)")
        ax.set_title("Energy per training stage (dynamic, on chip)")
        ax.tick_params(axis="x", labelrotation=12)
        ax = axes[0][1]
        if freq_mhz > 0:
            secs = [c / (freq_mhz * 1e6) for c in cycles]
            ts, tp = si_scale(secs)
            ax.bar([STAGE_LABELS.get(s, s) for s in stages], [t / ts for t in secs],
                   color=[STAGE_COLORS.get(s, "#999999") for s in stages], width=0.6)
            ax.set_ylabel(f"time ({tp}s per epoch, cycles / {freq_mhz:g} MHz)")
        else:
            ax.bar(stages, cycles)
            ax.set_ylabel("cycles per epoch")
        ax.set_title(f"Latency per training stage ({cost.get('schedule', '')} schedule)")
        ax.tick_params(axis="x", labelrotation=12)
        parts.append(figs.save(fig, "cost_stages.png",
                               "Energy and latency of each training stage in the last epoch"))

    # Per layer, stacked by stage.
    items = cost.get("by_layer_stage", [])
    layers = []
    for it in items:
        key = (it.get("layer"), it.get("summary", ""))
        if key not in layers:
            layers.append(key)
    if layers:
        labels = [f"#{l} {s}" for l, s in layers]
        e_stage, t_stage = {}, {}
        for it in items:
            i = layers.index((it.get("layer"), it.get("summary", "")))
            st = it.get("stage", "")
            e_stage.setdefault(st, [0.0] * len(layers))[i] += (fig_value(it, "energy") or 0) * 1e-12
            c = fig_value(it, "cycles") or 0
            t_stage.setdefault(st, [0.0] * len(layers))[i] += \
                c / (freq_mhz * 1e6) if freq_mhz > 0 else c
        fig, axes = figs.new(11, 4.2, cols=2)
        es, ep = si_scale([sum(v[i] for v in e_stage.values()) for i in range(len(layers))])
        _stage_bars(axes[0][0], labels, e_stage, es, f"energy ({ep}J per epoch)",
                    "Energy per layer and stage")
        if freq_mhz > 0:
            ts, tp = si_scale([sum(v[i] for v in t_stage.values()) for i in range(len(layers))])
            _stage_bars(axes[0][1], labels, t_stage, ts, f"time ({tp}s per epoch)",
                        "Latency per layer and stage")
        else:
            _stage_bars(axes[0][1], labels, t_stage, 1, "cycles per epoch",
                        "Cycles per layer and stage")
        parts.append(figs.save(fig, "cost_layers.png",
                               "Energy and latency of each layer on the macro, split by stage "
                               "(last epoch)"))

    # Per component (chip totals, including off-chip traffic and leakage).
    comps = cost.get("by_component", {})
    if comps:
        pairs = sorted(((k, (fig_value(comps, k) or 0) * 1e-12) for k in comps),
                       key=lambda kv: kv[1])
        total = sum(v for _, v in pairs) or 1
        es, ep = si_scale([v for _, v in pairs])
        fig, axes = figs.new(7.5, 0.45 * len(pairs) + 1.4)
        ax = axes[0][0]
        bars = ax.barh([k for k, _ in pairs], [v / es for _, v in pairs], color="#4C72B0")
        for b, (_, v) in zip(bars, pairs):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {100 * v / total:.1f}%",
                    va="center", fontsize=8)
        ax.set_xlabel(f"energy ({ep}J per epoch)")
        ax.set_title("Energy per component (share of the epoch's total)")
        ax.set_xlim(0, max(v for _, v in pairs) / es * 1.18 if pairs else 1)
        parts.append(figs.save(fig, "cost_components.png",
                               "Energy of each chip component in the last epoch"))
    return parts


def plot_cost_epochs(figs, metrics):
    rows = [(m["epoch"], m["cost"]) for m in metrics if isinstance(m.get("cost"), dict)]
    if len(rows) < 2:
        return ""
    epochs = [e for e, _ in rows]
    fig, axes = figs.new(11, 3.6, cols=2)
    energy = [c.get("energy_j", 0) for _, c in rows]
    es, ep = si_scale(energy)
    ax = axes[0][0]
    bottom = [0.0] * len(rows)
    for stage in STAGES:
        vals = [c.get("energy_j_" + stage, 0) / es for _, c in rows]
        if any(vals):
            ax.bar(epochs, vals, bottom=bottom, color=STAGE_COLORS[stage],
                   label=STAGE_LABELS[stage], width=0.6)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.plot(epochs, [e / es for e in energy], "k.-", label="total (with off-chip, leakage)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"energy ({ep}J)")
    ax.set_title("Energy per epoch")
    ax.set_ylim(0, max(e / es for e in energy) * 1.55)
    ax.legend(fontsize=8, ncol=2, loc="upper center")
    ax = axes[0][1]
    lat = [c.get("latency_s", 0) for _, c in rows]
    ts, tp = si_scale(lat)
    ax.plot(epochs, [t / ts for t in lat], "o-", label="latency (left axis)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"latency ({tp}s)")
    ax.set_title("Latency and efficiency per epoch")
    ax.set_ylim(0, max(t / ts for t in lat) * 1.3 or 1)
    ax2 = ax.twinx()
    eff = [c.get("tops_per_watt", 0) for _, c in rows]
    ax2.plot(epochs, eff, "s--", color="#C44E52", label="efficiency (right axis)")
    ax2.set_ylabel("efficiency (TOPS/W)")
    ax2.set_ylim(0, max(eff) * 1.3 or 1)
    ax2.grid(False)
    ax2.spines["right"].set_visible(True)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right")
    for a in axes[0]:
        a.xaxis.get_major_locator().set_params(integer=True)
    return figs.save(fig, "cost_epochs.png", "The simulated chip's cost of each epoch")


def sparsity_rows(metrics):
    """(layer label, {operand: zero fraction}) of the last epoch with per-layer statistics."""
    for m in reversed(metrics):
        layers = m.get("layers")
        if isinstance(layers, list) and layers:
            out = []
            for l in layers:
                fr = {k[:-len("_zero_fraction")]: v for k, v in l.items()
                      if k.endswith("_zero_fraction") and isinstance(v, (int, float))}
                # A layer without an error-propagation stage (the first) has no errors.
                if (l.get("actions") or {}).get("backward") == {}:
                    fr.pop("error", None)
                if isinstance(l.get("array_utilization"), (int, float)):
                    fr["array utilization"] = l["array_utilization"]
                out.append((f"#{l.get('layer', '?')} {l.get('summary', '')}", fr, l))
            return m["epoch"], out
    return None, []


def operand_order(rows):
    """The operands with zero fractions: inputs, errors, weights first (fixed colours)."""
    seen = {k for _, fr, _ in rows for k in fr if k != "array utilization"}
    return [k for k in ("input", "error", "weight") if k in seen] + \
        sorted(seen - {"input", "error", "weight"})


def plot_sparsity(figs, metrics):
    epoch, rows = sparsity_rows(metrics)
    if not rows:
        return ""
    operands = operand_order(rows)
    names = {"input": "inputs (activations)", "error": "errors (BP inputs)", "weight": "weights"}
    fig, axes = figs.new(max(6.5, 1.9 * len(rows) + 2), 4)
    ax = axes[0][0]
    width = 0.8 / max(1, len(operands))
    colors = ["#4C72B0", "#DD8452", "#55A868", "#8172B3", "#937860"]
    for j, op in enumerate(operands):
        xs = [i + (j - (len(operands) - 1) / 2) * width for i in range(len(rows))]
        vals = [100 * fr.get(op, float("nan")) for _, fr, _ in rows]
        color = OPERAND_COLORS.get(op, colors[(j + 3) % 5])
        bars = ax.bar(xs, vals, width=width, label=names.get(op, op), color=color)
        for b, v in zip(bars, vals):
            if math.isfinite(v):
                ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{v:.0f}", ha="center",
                        va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r[0] for r in rows])
    ax.set_ylabel("exactly-zero elements (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Sparsity per layer on the macro (epoch {epoch})")
    ax.legend(loc="upper right")
    return figs.save(fig, "sparsity.png", "Fraction of zero operands per layer and operand kind")


def plot_figures_check(figs, checks):
    rows = [c for c in checks if c.get("paper") not in (None, 0) and c.get("model") is not None]
    if not rows:
        return ""
    labels = [f"{c['figure']} @ {c.get('operating_point', '')}" +
              (" (calibrated)" if c.get("calibrated") else "") for c in rows]
    errors = [100 * (c["model"] - c["paper"]) / abs(c["paper"]) for c in rows]
    tol = [100 * c.get("tolerance", 0) for c in rows]
    fig, axes = figs.new(7.5, 0.5 * len(rows) + 1.6)
    ax = axes[0][0]
    ys = list(range(len(rows)))
    for y, t in zip(ys, tol):
        ax.fill_betweenx([y - 0.4, y + 0.4], -t, t, color="#55A868", alpha=0.18, lw=0)
    colors = ["#4C72B0" if c.get("ok") else "#C44E52" for c in rows]
    ax.barh(ys, errors, color=colors, height=0.5)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlabel("model - paper (% of the published value)")
    ax.set_title("Published figures vs the model\n(green band: tolerance; red bar: outside it)")
    lim = max([abs(e) for e in errors] + tol + [1]) * 1.15
    ax.set_xlim(-lim, lim)
    return figs.save(fig, "figures_vs_paper.png",
                     "Relative error of the model on each published figure of the preset")


def plot_sweep(figs, sweep):
    rows = [r for r in sweep["rows"] if r.get("status") == "ok"]
    keys = sweep["keys"]
    parts = []
    present = [m for m in SWEEP_METRICS
               if any(isinstance(r.get(m[0]), (int, float)) for r in rows)]
    if not rows or not keys or not present:
        return parts
    trained = any(m[0] == "test_accuracy" for m in present)
    what = "the last epoch" if trained else "one dense benchmark multiply"
    metrics = []
    for k, label, scale in present:
        if k in ("energy_j", "latency_s"):
            sc, prefix = si_scale([r[k] for r in rows if isinstance(r.get(k), (int, float))])
            unit = "J" if k == "energy_j" else "s"
            name = "energy" if k == "energy_j" else "latency"
            metrics.append((k, f"{name} of {what} ({prefix}{unit})", 1.0 / sc, name))
        else:
            metrics.append((k, label, scale, label.split(" (")[0]))
    for i, key in enumerate(keys):
        others = [k for k in keys if k != key]
        xs_all = [r.get(key) for r in rows]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs_all)
        cats = []
        if not numeric:
            for x in xs_all:
                s = json.dumps(x)
                if s not in cats:
                    cats.append(s)
        ncols = 1 if len(metrics) == 1 else 2
        nrows = (len(metrics) + ncols - 1) // ncols
        fig, axes = figs.plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 3.9 * nrows),
                                      squeeze=False)
        groups = {}
        for r in rows:
            g = ", ".join(f"{k.split('.')[-1]}={json.dumps(r.get(k))}" for k in others)
            groups.setdefault(g, []).append(r)
        flat = [ax for row in axes for ax in row]
        for (mk, label, scale, short), ax in zip(metrics, flat):
            for g, grp in groups.items():
                pts = [(r.get(key) if numeric else cats.index(json.dumps(r.get(key))),
                        r.get(mk)) for r in grp if isinstance(r.get(mk), (int, float))]
                pts.sort(key=lambda p: p[0])
                if not pts:
                    continue
                ax.plot([p[0] for p in pts], [p[1] * scale for p in pts], "o-",
                        label=g if g else None)
            ax.set_xlabel(key)
            ax.set_ylabel(label)
            ax.set_title(f"{short} vs {key.split('.')[-1]}")
            vals = [r.get(mk) for r in rows if isinstance(r.get(mk), (int, float))]
            if mk in ("energy_j", "latency_s", "tops_per_watt") and vals and min(vals) > 0 and \
                    max(vals) / min(vals) > 30:
                ax.set_yscale("log")
            if not numeric:
                ax.set_xticks(range(len(cats)))
                ax.set_xticklabels(cats, rotation=15, ha="right")
            elif all(float(x).is_integer() for x in xs_all):
                ax.xaxis.get_major_locator().set_params(integer=True)
            if len(groups) > 1:
                ax.legend(fontsize=8)
        for ax in flat[len(metrics):]:
            ax.set_visible(False)
        parts.append(figs.save(fig, f"sweep_{i}.png",
                               f"Sweep results against {key}" +
                               (f" (one line per value of {', '.join(others)})" if others else "")))
    return parts


# ----------------------------------------------------------------------------------------------
# Pages

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } tr.bad td { background: #fde8e8; } tr.ok td { background: #eef8ee; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } pre { background: #f7f7f7; padding: 0.8em;
overflow-x: auto; font-size: 0.8em; } .note { color: #555; font-size: 0.9em; }
"""


def load_optional_json(run_dir, name):
    """DIR/NAME parsed, or None when absent; a malformed file is a ReportError."""
    path = os.path.join(run_dir, name)
    if not os.path.isfile(path):
        return None
    try:
        return json.loads(_read_text(path))
    except ValueError:
        raise ReportError(f"{path}: malformed (truncated or not JSON)")


def plot_device_states(figs, devices):
    """Per device-mode layer: the distribution of the devices' normalized conductance after
    training (the weights they hold for an unbounded device), C and Tiki-Taka's A overlaid."""
    layers = devices.get("layers") or []
    if not layers:
        return ""
    fig, axes = figs.new(min(4.2 * len(layers), 13), 3.6, cols=len(layers))
    for ax, layer in zip(axes[0], layers):
        for arr, colour in zip(layer.get("arrays", []), ["#4C72B0", "#DD8452"]):
            h = arr.get("conductance") or arr.get("weight")
            edges, counts = h["edges"], h["counts"]
            total = max(1, sum(counts))
            ax.stairs([100.0 * c / total for c in counts], edges, fill=True, alpha=0.55,
                      color=colour, label=arr.get("array", ""))
        bounded = any("conductance" in a for a in layer.get("arrays", []))
        ax.set_xlabel("normalized conductance (w - b-)/(b+ - b-)" if bounded else
                      "weight held by the device")
        ax.set_ylabel("devices (%)")
        ax.set_title(f"layer {layer.get('layer')}: {layer.get('device', '')}")
        ax.legend()
    return figs.save(fig, "device_states.png",
                     "Distribution of the devices' conductance after training, per layer")


def plot_drift(figs, drift):
    rows = [r for r in drift.get("rows", []) if r.get("seconds", 0) > 0]
    if not rows:
        return ""
    fig, axes = figs.new(6.5, 4)
    ax = axes[0][0]
    t = [r["seconds"] for r in rows]
    for key, style, label in [("compensated", "o-", "global drift compensation"),
                              ("uncompensated", "s--", "no compensation")]:
        ax.errorbar(t, [100 * r[key]["mean"] for r in rows],
                    yerr=[100 * r[key]["std"] for r in rows], fmt=style, capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("time since programming (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy against drift time (mean +- std of {drift.get('repeats')} "
                 "programmings)")
    ax.legend()
    return figs.save(fig, "drift.png", "Test accuracy against conductance drift time")


def device_section(run, figs):
    devices, drift = run.get("devices"), run.get("drift")
    if devices is None and drift is None:
        return section("devices", "Analog devices",
                       "<p class=\"note\">No analog devices in this run (no device-mode "
                       "macro: docs/devices.md), and no <code>pimtrain eval --drift-time</code> "
                       "table (drift.json) beside it.</p>")
    content = ""
    if devices is not None:
        content += ("<p class=\"note\">The devices' states after training (devices.json): "
                    "each device's conductance normalized to its own bounds.</p>")
        content += plot_device_states(figs, devices)
        rows = []
        for layer in devices.get("layers", []):
            for arr in layer.get("arrays", []):
                rows.append([str(layer.get("layer")), layer.get("device", ""),
                             arr.get("array", ""), f"{arr.get('cells', 0):,}",
                             str(arr.get("at_lower_bound", "-")),
                             str(arr.get("at_upper_bound", "-"))])
        content += table(["layer", "device", "array", "cells", "at lower bound",
                          "at upper bound"], rows)
    if drift is not None:
        content += ("<p class=\"note\">From <code>pimtrain eval --drift-time</code> "
                    "(drift.json).</p>")
        content += plot_drift(figs, drift)
        content += table(["drift time (s)", "compensated (%)", "uncompensated (%)"],
                         [[f"{r['seconds']:g}",
                           f"{100 * r['compensated']['mean']:.2f} +- "
                           f"{100 * r['compensated']['std']:.2f}",
                           f"{100 * r['uncompensated']['mean']:.2f} +- "
                           f"{100 * r['uncompensated']['std']:.2f}"]
                          for r in drift.get("rows", [])])
    return section("devices", "Analog devices", content)


def page(title, body):
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n"
            f"<h1>{esc(title)}</h1>\n{body}\n"
            "<p class=\"note\">Written by <code>pimtrain report</code> (docs/report.md).</p>"
            "</body></html>\n")


def section(ident, title, content):
    return f'<section id="{ident}"><h2>{esc(title)}</h2>\n{content}\n</section>\n'


def run_page(run, figs, checks):
    metrics, summary, config = run["metrics"], run["summary"], run["config"]
    last = metrics[-1]
    name = config.get("name") or os.path.basename(os.path.abspath(run["dir"]))
    body = []

    info = [("run directory", os.path.abspath(run["dir"]))]
    if config.get("description"):
        info.append(("description", " ".join(str(config["description"]).split())))
    data = config.get("data", {})
    if data:
        info.append(("data", data.get("impl", "")))
    model = config.get("model", {})
    if model:
        info.append(("model", model.get("impl", "") +
                     (f" {model['layers']}" if model.get("impl") == "mlp" else "") +
                     (f" ({len(model.get('nodes', []))} blocks)" if model.get("impl") == "graph"
                      else "")))
    macro = (config.get("pim") or {}).get("macro")
    info.append(("macro", macro.get("impl") if isinstance(macro, dict) else
                 "none (exact FP32 engine)"))
    algo = (config.get("train") or {}).get("algorithm", {})
    if algo:
        info.append(("training algorithm", algo.get("impl", "")))
    info.append(("epochs", str(len(metrics))))
    info.append(("final test accuracy", f"{100 * last['test_accuracy']:.2f}%"))
    best = max(metrics, key=lambda m: m["test_accuracy"])
    info.append(("best test accuracy", f"{100 * best['test_accuracy']:.2f}% (epoch "
                 f"{best['epoch']})"))
    if summary:
        if "parameters" in summary:
            info.append(("parameters", f"{summary['parameters']:,}"))
        if "train_seconds" in summary:
            info.append(("wall time training", f"{summary['train_seconds']:.1f} s"))
    else:
        info.append(("summary.json", "missing (the run did not finish)"))
    body.append(section("summary", "Summary", table(None, info)))

    graph = (summary or {}).get("graph")
    if isinstance(graph, list) and graph:
        # A graph model: every node with the nodes it reads, its layer and its output shape
        # (summary.json "graph"; node i is "#i" in the per-layer plots below).
        rows = [(f"#{i}", n.get("name", ""), ", ".join(n.get("inputs", [])), n.get("layer", ""),
                 "x".join(str(d) for d in n.get("output", [])))
                for i, n in enumerate(graph)]
        fan = sum(1 for n in graph if sum(n.get("name") in m.get("inputs", []) for m in graph) > 1)
        note = (f"<p class=\"note\">A graph model: {len(graph)} nodes, {fan} of them read by "
                "more than one node (their errors are the sums of their consumers'). Node "
                "numbers are the layer numbers of the cost and sparsity sections.</p>")
        body.append(section("network", "Network graph",
                            note + table(["node", "name", "inputs", "layer", "output"], rows)))

    curves = plot_curves(figs, metrics) + plot_lr(figs, metrics)
    body.append(section("curves", "Training and test curves", curves))

    cost = (summary or {}).get("cost")
    if isinstance(cost, dict):
        op = cost.get("operating_point", {})
        head = [
            ("operating point", f"{op.get('name', '')}: {fig_value(op, 'voltage')} V, "
                                f"{fig_value(op, 'frequency')} MHz, {cost.get('tech', '')}"),
            ("energy per epoch", si((fig_value(cost, "energy") or 0) * 1e-12, "J")),
            ("latency per epoch", si(fig_value(cost, "latency"), "s")),
            ("power", si((fig_value(cost, "power") or 0) * 1e-3, "W")),
            ("efficiency", f"{fig_value(cost, 'tops_per_watt') or 0:.4g} TOPS/W"),
            ("area efficiency", f"{fig_value(cost, 'gops_per_mm2') or 0:.4g} GOPS/mm2"),
            ("chip area", f"{fig_value(cost, 'chip_area') or 0:.4g} mm2"),
            ("off-chip traffic", si((fig_value(cost, "offchip_traffic") or 0) / 8, "B")),
        ]
        if fig_value(cost, "energy_per_sample") is not None:
            head.append(("energy per sample", si(fig_value(cost, "energy_per_sample") * 1e-6, "J")))
        content = ("<p class=\"note\">The simulated chip's cost of the last epoch, from the "
                   "counted "
                   "hardware actions priced by the cost model (docs/cost.md). Stage and layer "
                   "plots show dynamic energy on the chip; the component plot adds off-chip "
                   "traffic and leakage. Stage latency is each stage's cycles at the operating "
                   "frequency, as if it ran alone.</p>")
        content += table(["figure", "value"], head)
        content += "".join(plot_cost(figs, cost))
        content += plot_cost_epochs(figs, metrics)
        body.append(section("cost", "Energy and latency", content))
    else:
        body.append(section("cost", "Energy and latency",
                            "<p class=\"note\">No cost model in this run's config (add a "
                            "<code>cost:</code> block; docs/cost.md).</p>"))

    epoch, srows = sparsity_rows(metrics)
    if srows:
        operands = operand_order(srows)
        if any("array utilization" in fr for _, fr, _ in srows):
            operands.append("array utilization")
        trows = [[label] + [f"{100 * fr[k]:.1f}%" if k in fr else "" for k in operands]
                 for label, fr, _ in srows]
        body.append(section("sparsity", "Sparsity per layer",
                            plot_sparsity(figs, metrics) +
                            table(["layer"] + [f"{k} zeros" if k != "array utilization" else k
                                               for k in operands], trows)))
    else:
        body.append(section("sparsity", "Sparsity per layer",
                            "<p class=\"note\">No layer runs on a PIM macro in this run, so no "
                            "per-layer operand statistics were counted.</p>"))

    if checks is not None:
        if isinstance(checks, dict) and "error" in checks:
            content = f"<p class=\"note\">Could not evaluate: {esc(checks['error'])}</p>"
        else:
            rows, classes = [], []
            for c in checks:
                paper = c.get("paper")
                err = c.get("relative_error")
                status = ("prediction (no published value)" if paper is None else
                          ("ok" if c.get("ok") else "outside tolerance"))
                if c.get("calibrated"):
                    status += ", calibrated"
                rows.append([c.get("figure", ""), c.get("operating_point", ""),
                             f"{paper:.4g}" if isinstance(paper, (int, float)) else "-",
                             f"{c.get('model', 0):.4g}", c.get("unit", ""),
                             f"{100 * err:+.1f}%" if isinstance(err, (int, float)) else "-",
                             f"±{100 * c.get('tolerance', 0):.0f}%", status,
                             c.get("workload", "")])
                classes.append("" if paper is None else ("ok" if c.get("ok") else "bad"))
            content = ("<p class=\"note\">The preset's published figures (<code>expected:</code>) "
                       "against the cost model, as <code>pimtrain cost PRESET</code> prints them "
                       "(docs/fidelity.md). Calibrated figures had a model parameter fitted to "
                       "them.</p>")
            content += table(["figure", "operating point", "paper", "model", "unit", "error",
                              "tolerance", "status", "workload"], rows, classes)
            content += plot_figures_check(figs, checks)
        body.append(section("paper", "Paper vs model", content))

    body.append(device_section(run, figs))

    body.append(section("config", "Config",
                        f"<details><summary>config.yaml (resolved)</summary><pre>"
                        f"{esc(run['config_text'])}</pre></details>"))
    return page(f"pimtrain report: {name}", "".join(body))


def sweep_page(sweep, figs):
    rows, keys = sweep["rows"], sweep["keys"]
    ok = [r for r in rows if r.get("status") == "ok"]
    body = []
    info = [("sweep directory", os.path.abspath(sweep["dir"])),
            ("points", f"{len(rows)} ({len(ok)} ok, {len(rows) - len(ok)} failed)"),
            ("varied keys", ", ".join(keys) or "-")]
    accs = [r for r in ok if isinstance(r.get("test_accuracy"), (int, float))]
    if accs:
        best = max(accs, key=lambda r: r["test_accuracy"])
        info.append(("best test accuracy", f"{100 * best['test_accuracy']:.2f}% at "
                     f"{best['point']}"))
    body.append(section("summary", "Summary", table(None, info)))
    plots = plot_sweep(figs, sweep)
    body.append(section("plots", "Results against the varied keys",
                        "".join(plots) if plots else
                        "<p class=\"note\">Nothing to plot: no finished point with a numeric "
                        "result.</p>"))
    header = keys + ["status", "test accuracy", "energy", "latency", "TOPS/W", "wall time",
                     "dir", "error"]
    trows, classes = [], []
    for r in rows:
        acc = r.get("test_accuracy")
        trows.append([json.dumps(r.get(k)) for k in keys] + [
            r.get("status", ""),
            f"{100 * acc:.2f}%" if isinstance(acc, (int, float)) else "-",
            si(r.get("energy_j"), "J") if r.get("energy_j") is not None else "-",
            si(r.get("latency_s"), "s") if r.get("latency_s") is not None else "-",
            f"{r['tops_per_watt']:.4g}" if isinstance(r.get("tops_per_watt"), (int, float))
            else "-",
            f"{r['seconds']:.1f} s" if isinstance(r.get("seconds"), (int, float)) else "-",
            r.get("dir", ""), r.get("error", "")])
        classes.append("" if r.get("status") == "ok" else "bad")
    body.append(section("points", "Points", table(header, trows, classes)))
    name = os.path.basename(os.path.abspath(sweep["dir"]))
    return page(f"pimtrain sweep report: {name}", "".join(body))


def write_report(run_dir, out_dir=None, kind=None, figures=None):
    """Writes the report of `run_dir` (a run or a sweep) to `out_dir` (default RUN_DIR/report);
    `figures` is a preset's published-figure check (a list, as `pimtrain cost PRESET --json`
    gives under "expected"). Returns the path of index.html. ReportError on bad input."""
    run_dir = run_dir.rstrip("/") or "/"
    if not os.path.exists(run_dir):
        raise ReportError(f"{run_dir}: no such directory")
    if not os.path.isdir(run_dir):
        raise ReportError(f"{run_dir}: not a directory (report takes a run's directory)")
    kind = kind or detect_kind(run_dir)
    loaded = load_sweep(run_dir) if kind == "sweep" else load_run(run_dir)
    out_dir = out_dir or os.path.join(run_dir, "report")
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".report-", dir=parent)
    try:
        figs = Figures(tmp)
        text = sweep_page(loaded, figs) if kind == "sweep" else run_page(loaded, figs, figures)
        with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        # Replace an earlier report only now that this one is complete.
        if os.path.isdir(out_dir):
            if not os.path.isfile(os.path.join(out_dir, "index.html")) and os.listdir(out_dir):
                raise ReportError(f"{out_dir}: exists and is not a report (no index.html); "
                                  "choose another --out")
            shutil.rmtree(out_dir)
        elif os.path.exists(out_dir):
            raise ReportError(f"{out_dir}: exists and is not a directory")
        os.rename(tmp, out_dir)
        return os.path.join(out_dir, "index.html"), figs.files
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description="HTML report with plots of a pimtrain run or sweep")
    p.add_argument("dir", help="a run directory (pimtrain train --out) or a sweep's")
    p.add_argument("--out", help="output directory (default DIR/report)")
    p.add_argument("--kind", choices=["run", "sweep"], help="default: from the files in DIR")
    p.add_argument("--figures", help="JSON: a preset's published figures against the model")
    args = p.parse_args(argv)
    try:
        checks = None
        if args.figures:
            try:
                checks = json.loads(_read_text(args.figures))
            except ValueError:
                raise ReportError(f"{args.figures}: malformed figures JSON")
            if isinstance(checks, dict) and "expected" in checks:
                checks = checks["expected"]  # the whole `pimtrain cost --json` output
        index, files = write_report(args.dir, args.out, args.kind, checks)
    except ReportError as e:
        print(f"pimtrain: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pimtrain: error: {e}", file=sys.stderr)
        return 2
    print(f"report: {index} ({len(files)} plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
