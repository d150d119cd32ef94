"""Training sessions: per-epoch callbacks, the run directory, cost reports, the CLI's numbers."""
import json
import os

import numpy as np
import pytest

pimtrain = pytest.importorskip("pimtrain")
from conftest import run_cli  # noqa: E402

MLP = {"model": {"impl": "mlp", "layers": [784, 32, 10]},
       "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 64}}


def tiny(tiny_data, base=MLP):
    return pimtrain.Config(base, {"data": {"impl": "fashion_mnist", "dir": tiny_data,
                                           "normalize": "unit"}})


def test_train_calls_back_each_epoch_and_writes_the_run(tiny_data, tmp_path):
    seen = []
    run = pimtrain.Session(tiny(tiny_data)).train(out_dir=str(tmp_path), on_epoch=seen.append)
    assert [m["epoch"] for m in seen] == [1, 2]
    assert run["epochs"] == seen
    assert run["test_accuracy"] == seen[-1]["test_accuracy"] > 0.3  # learnable: chance is 0.1
    assert run["cost"] is None and run["cost_report"] is None
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["test_accuracy"] for l in lines] == [m["test_accuracy"] for m in seen]
    assert json.loads((tmp_path / "summary.json").read_text())["epochs"] == 2


def test_a_preset_run_has_its_cost_as_a_dict(tiny_data):
    run = pimtrain.train("tpim", sets=[f"data.dir={tiny_data}", "train.epochs=1",
                                       "train.eval_batch_size=64"])
    cost = run["cost"]
    assert cost["energy"]["unit"] == "pJ" and cost["energy"]["value"] > 0
    # T-PIM's 5 arrays cannot hold the MLP: the tiles stream through them ("reprogram").
    assert set(cost["by_stage"]) == {"forward", "backward", "gradient", "update", "reprogram"}
    assert run["cost_report"].energy_pj == pytest.approx(cost["energy"]["value"])
    assert "TOPS/W" in run["cost_report"].headline()
    layers = run["epochs"][0]["layers"]
    assert [l["summary"] for l in layers] == ["linear 784 -> 256", "linear 256 -> 128",
                                              "linear 128 -> 10"]


def test_same_numbers_as_the_cli(tiny_data, tmp_path, cli):
    cfg = tiny(tiny_data)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(cfg.to_yaml())
    r = run_cli(cli, "train", str(cfg_file), "--out", str(tmp_path / "cli"))
    assert r.returncode == 0, r.stderr
    cli_lines = [json.loads(l) for l in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    run = pimtrain.Session(cfg).train()
    for a, b in zip(cli_lines, run["epochs"]):
        assert (a["train_loss"], a["test_accuracy"]) == (b["train_loss"], b["test_accuracy"])


def test_a_raising_callback_stops_the_run(tiny_data):
    class Stop(Exception):
        pass

    def on_epoch(m):
        raise Stop(m["epoch"])

    with pytest.raises(Stop):
        pimtrain.Session(tiny(tiny_data)).train(on_epoch=on_epoch)


def test_data_parameters_and_order(tiny_data):
    s = pimtrain.Session(tiny(tiny_data))
    data = s.data()
    x, y = data["train"]
    assert x.shape == (128, 28, 28, 1) and y.shape == (128,) and data["num_classes"] == 10
    assert 0.0 <= x.min() and x.max() <= 1.0  # normalize: unit
    params = s.parameters()
    assert params["layers.1.weight"].shape == (784, 32)  # (in, out): the macro's orientation
    order = pimtrain.epoch_order(1, 0, 128)
    assert sorted(order.tolist()) == list(range(128))
    assert not np.array_equal(order, pimtrain.epoch_order(1, 1, 128))
    before = s.evaluate()["accuracy"]
    s.train()
    assert s.evaluate()["accuracy"] > before


def test_bad_data_dir_is_an_io_error(tmp_path):
    with pytest.raises(pimtrain.IoError, match="train-images-idx3-ubyte"):
        pimtrain.Session({"data": {"impl": "fashion_mnist", "dir": str(tmp_path)}})


def test_chip_cost_is_the_cost_commands_json():
    figures = pimtrain.chip_cost("tpim")
    assert [p["operating_point"]["name"] for p in figures["operating_points"]] == \
        ["run", "low_power", "high_speed"]
    checks = figures["expected"]
    assert len(checks) == 4 and all(c["ok"] for c in checks)
    assert {c["paper"] for c in checks} == {2.21, 51.23, 161.08, 5.25}
