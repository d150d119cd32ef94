"""Configs from dicts, YAML text, files and presets: the CLI's schema, defaults and messages."""
import os

import pytest

pimtrain = pytest.importorskip("pimtrain")
from conftest import ROOT, run_cli  # noqa: E402


def test_dict_resolves_with_defaults_and_types():
    cfg = pimtrain.Config({"model": {"impl": "mlp", "layers": [784, 32, 10]},
                           "train": {"epochs": 3, "optimizer": {"impl": "sgd", "learning_rate": 0.1}}})
    d = cfg.to_dict()
    assert d["train"]["epochs"] == 3 and isinstance(d["train"]["epochs"], int)
    assert d["train"]["optimizer"]["learning_rate"] == 0.1
    assert d["train"]["optimizer"]["momentum"] == 0.0  # sgd's default filled in
    assert d["train"]["batch_size"] == 64             # the root schema's default
    assert d["model"]["layers"] == [784, 32, 10]
    assert cfg["seed"] == 1


def test_sources_merge_in_order_then_sets():
    cfg = pimtrain.Config("tpim", {"train": {"epochs": 3}}, sets=["train.batch_size=32"])
    d = cfg.to_dict()
    assert d["name"] == "tpim" and d["train"]["epochs"] == 3 and d["train"]["batch_size"] == 32
    assert d["pim"]["macro"]["impl"] == "digital_bitserial"
    path = os.path.join(ROOT, "presets", "chips", "tpim.yaml")
    assert pimtrain.Config(path) == pimtrain.Config("tpim")
    assert cfg.override(["train.epochs=5"])["train"]["epochs"] == 5


def test_unknown_key_is_a_value_error_with_the_clis_message():
    with pytest.raises(ValueError) as e:
        pimtrain.Config({"train": {"epocs": 3}})
    assert isinstance(e.value, pimtrain.ConfigError) and isinstance(e.value, pimtrain.Error)
    assert "unknown key 'train.epocs' (did you mean 'epochs'?)" in str(e.value)
    assert str(e.value).startswith("<dict>: ")


def test_set_errors_match_the_cli_word_for_word(cli):
    for bad in ("train.epocs=3", "train.epochs=abc", "train.batch_size=0"):
        with pytest.raises(pimtrain.ConfigError) as e:
            pimtrain.Config(sets=[bad])
        r = run_cli(cli, "train", "--set", bad, "--out", os.devnull)
        assert r.returncode == 2
        assert r.stderr.strip() == f"pimtrain: error: {e.value}"


def test_yaml_text_errors_name_the_line():
    cfg = pimtrain.Config.from_yaml("seed: 7\ntrain: {epochs: 2}\n")
    assert cfg["seed"] == 7 and cfg["train"]["epochs"] == 2
    with pytest.raises(pimtrain.ConfigError, match=r"^my.yaml:2: .*threads"):
        pimtrain.Config.from_yaml("seed: 7\nthreads: many\n", origin="my.yaml")


def test_bad_sources():
    with pytest.raises(pimtrain.IoError) as e:
        pimtrain.Config("no_such_preset")
    assert isinstance(e.value, OSError) and "no such config file" in str(e.value)
    with pytest.raises(pimtrain.ConfigError, match="cannot use a Python object"):
        pimtrain.Config({"seed": object()})
    with pytest.raises(pimtrain.ConfigError, match="keys must be strings"):
        pimtrain.Config({1: 2})
    with pytest.raises(pimtrain.ConfigError, match="a config source must be"):
        pimtrain.Config(42)


def test_yaml_and_json_round_trip():
    cfg = pimtrain.Config("isscc25")
    assert pimtrain.Config.from_yaml(cfg.to_yaml()) == cfg
    assert "fp_digital" in cfg.to_json()


def test_describe_lists_the_registry():
    macros = pimtrain.describe("macro")["macro"]
    assert {"digital_bitserial", "fp_digital", "analog_crossbar", "double_buffered"} <= set(macros)
    rows = [p for p in macros["digital_bitserial"]["params"] if p["name"] == "rows"][0]
    assert rows["default"] == "256"
    with pytest.raises(pimtrain.ConfigError, match="unknown role 'macros'"):
        pimtrain.describe("macros")


def test_install_pth_makes_pimtrain_importable_anywhere(tmp_path):
    """python/install_pth.py: idempotent, and its .pth file is all an interpreter needs."""
    import subprocess
    import sys
    build = os.path.dirname(os.path.dirname(pimtrain._pimtrain.__file__))
    script = os.path.join(ROOT, "python", "install_pth.py")
    first = subprocess.run([sys.executable, script, build, "--site", str(tmp_path)],
                           capture_output=True, text=True)
    assert first.returncode == 0 and "wrote" in first.stdout
    pth = tmp_path / "pimtrain.pth"
    stamp = pth.stat().st_mtime_ns
    again = subprocess.run([sys.executable, script, build, "--site", str(tmp_path)],
                           capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout == "" and pth.stat().st_mtime_ns == stamp
    code = (f"import site; site.addsitedir({str(tmp_path)!r}); import pimtrain; "
            "print(pimtrain.__file__, pimtrain._pimtrain.__file__, pimtrain.Config('tpim')['name'])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -S: none of the interpreter's own site directories (or .pth files), only this one.
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd="/",
                       env=env)
    assert r.returncode == 0, r.stderr
    package, module, name = r.stdout.split()
    assert package == os.path.join(ROOT, "python", "pimtrain", "__init__.py") and name == "tpim"
    assert module.startswith(os.path.join(build, "python") + os.sep)


def test_sets_change_one_key_inside_the_default_components():
    d = pimtrain.Config(sets=["train.optimizer.learning_rate=0.01", "model.layers[1]=512"]).to_dict()
    assert d["train"]["optimizer"] == {"impl": "sgd", "learning_rate": 0.01, "momentum": 0.9,
                                       **{k: v for k, v in d["train"]["optimizer"].items()
                                          if k not in ("impl", "learning_rate", "momentum")}}
    assert d["model"]["impl"] == "mlp" and d["model"]["layers"] == [784, 512, 128, 10]
    # Replacing a component is explicit and gives the new implementation's own defaults.
    adam = pimtrain.Config(sets=["train.optimizer={impl: adam}"]).to_dict()["train"]["optimizer"]
    assert adam["impl"] == "adam" and "momentum" not in adam
    assert pimtrain.Config().override(["train.optimizer.momentum=0.5"])["train"]["optimizer"][
        "momentum"] == 0.5
