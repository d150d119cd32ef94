"""Each example script trains its preset on tiny data and prints accuracy and cost."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("pimtrain")
from conftest import ROOT  # noqa: E402

EXAMPLES = ["tpim", "sppim", "isscc25", "pimqat", "neuralpim", "isaac", "cascade"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_on_tiny_data(name, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PIMTRAIN_CLI=os.environ.get("PIMTRAIN_CLI", "/nonexistent"))
    # One example also writes its report (when this build has `pimtrain report`).
    extra = [] if name == "tpim" else ["--no-report"]
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", f"{name}.py"), "--tiny",
                        "--out", str(out)] + extra, capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test accuracy:" in r.stdout
    assert "simulated chip cost" in r.stdout  # the cost report's headline
    assert (out / "metrics.jsonl").exists() and (out / "summary.json").exists()
    if name == "tpim" and "report: skipped" not in r.stdout:
        assert "report" in r.stdout.splitlines()[-1]


def test_every_seed_preset_has_an_example():
    presets = {"tpim", "sppim", "isscc25", "pimqat", "neuralpim"}
    assert presets <= {f[:-3] for f in os.listdir(os.path.join(ROOT, "examples"))}


def test_example_rejects_a_bad_override(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "tpim.py"), "--tiny",
                        "--out", str(tmp_path), "--set", "train.epocs=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("tpim.py: error: --set train.epocs: unknown key")
