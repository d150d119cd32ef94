"""pimtrain from Python: configs, PIM macros on NumPy arrays, training sessions, cost reports.

Everything here is pimtrain's C++ library behind thin bindings (the compiled `_pimtrain`
module); the numbers are the same as the `pimtrain` command's for the same config.

    import pimtrain
    cfg = pimtrain.Config("tpim", sets=["train.epochs=1"])     # preset, file or dict
    run = pimtrain.Session(cfg).train(on_epoch=print)           # per-epoch dicts
    run["test_accuracy"], run["cost"]["energy"]

    m = pimtrain.Macro({"impl": "digital_bitserial", "rows": 256, "cols": 256})
    m.program(w)                        # w: rows x cols float32
    y = m.multiply(x)                   # x W
    dx = m.multiply(dy, transposed=True)  # dy W^T, the same stored bits
    m.counts()                          # {"bitserial_cycles": ..., ...}

`pimtrain.torch` (imported on first use) has PimLinear, PimConv2d and convert() for PyTorch.
Config mistakes raise pimtrain.ConfigError (a ValueError) with the CLI's one-line message.
"""
import importlib

try:
    import _pimtrain
except ImportError as e:  # pragma: no cover - depends on the build
    raise ImportError(
        "pimtrain's compiled module (_pimtrain) was not found: build it (scripts/build.sh, or "
        "ninja -C BUILD pimtrain_python) and put BUILD/python on sys.path "
        "(python/install_pth.py does that for /usr/bin/python3); " + str(e)) from e

from _pimtrain import (  # noqa: F401  (the public API)
    Config,
    ConfigError,
    CostModel,
    CostReport,
    DataError,
    Error,
    IoError,
    Macro,
    MacroLayer,
    NumericError,
    Session,
    UnsupportedError,
    chip_cost,
    describe,
    epoch_order,
    presets_dir,
    set_threads,
    threads,
)

__all__ = [
    "Config", "ConfigError", "CostModel", "CostReport", "DataError", "Error", "IoError", "Macro",
    "MacroLayer", "NumericError", "Session", "UnsupportedError", "chip_cost", "describe",
    "epoch_order", "presets_dir", "set_threads", "threads", "train",
]


def train(*sources, sets=(), out_dir=None, resume=False, on_epoch=None, on_progress=None,
          on_info=None):
    """Resolves a config from `sources` and `sets` (see Config), trains it, returns the summary.

    The summary is a dict: epochs (one dict per epoch, the metrics.jsonl line), test_accuracy,
    train_seconds, peak_rss_bytes, and with a `cost:` block cost (the last epoch's CostReport
    as a dict), cost_report (the object: headline(), table()), cost_energy_pj_all_epochs.
    With out_dir the run directory is written as `pimtrain train --out` writes it.
    """
    session = Session(Config(*sources, sets=list(sets)))
    return session.train(out_dir=None if out_dir is None else str(out_dir), resume=resume,
                         on_epoch=on_epoch, on_progress=on_progress, on_info=on_info)


def __getattr__(name):
    # Submodules that pull in heavy dependencies load on first use: pimtrain.torch (PyTorch),
    # pimtrain.report (matplotlib), pimtrain.testing.
    if name in ("torch", "report", "testing"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'pimtrain' has no attribute '{name}'")
