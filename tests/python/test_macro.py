"""Macros on NumPy arrays: program, multiply both ways, gradient, counts, pricing."""
import numpy as np
import pytest

pimtrain = pytest.importorskip("pimtrain")

BITSERIAL = {"impl": "digital_bitserial", "rows": 64, "cols": 32, "input_bits": 8,
             "weight_bits": 8, "weight_bits_backward": 16, "forward_weight_read": "nearest"}


def operands(n=16, rows=100, cols=40, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)
    x = rng.random((n, rows)).astype(np.float32)
    dy = (rng.standard_normal((n, cols)) * 0.01).astype(np.float32)
    return w, x, dy


def test_multiply_both_directions_and_counts():
    w, x, dy = operands()
    m = pimtrain.Macro(BITSERIAL)
    m.program(w)
    y = m.multiply(x)
    dx = m.multiply(dy, transposed=True)
    assert y.shape == (16, 40) and dx.shape == (16, 100) and y.dtype == np.float32
    # Quantized products: close to the float ones, not equal.
    assert np.abs(y - x @ w).max() < 0.05 * np.abs(x @ w).max()
    assert np.abs(dx - dy @ w.T).max() < 0.05 * np.abs(dy @ w.T).max()
    assert not np.array_equal(y, x @ w)
    by_stage = m.counts_by_stage()
    assert by_stage["forward"]["macs"] == 16 * 100 * 40
    assert by_stage["backward"]["macs"] == 16 * 100 * 40
    assert by_stage["update"]["weight_writes"] > 0
    assert m.counts()["macs"] == 2 * 16 * 100 * 40
    assert m.counts("forward")["bitserial_cycles"] > 0
    # The same call gives the same bits.
    np.testing.assert_array_equal(m.multiply(x), y)
    m.reset_counts()
    assert m.counts() == {}


def test_stored_weights_and_gradient():
    w, x, dy = operands()
    m = pimtrain.Macro(BITSERIAL)
    m.program(w)
    held = m.weights()
    assert held.shape == w.shape and np.abs(held - w).max() < 0.01
    dw = m.gradient(x, dy)
    assert dw.shape == w.shape
    assert np.abs(dw - x.T @ dy).max() < 0.05 * np.abs(x.T @ dy).max()
    assert m.counts("gradient")["macs"] == 16 * 100 * 40


def test_macro_layer_matches_the_macro():
    w, x, dy = operands()
    layer = pimtrain.MacroLayer(BITSERIAL)
    held = layer.program(w)
    np.testing.assert_array_equal(held, w)  # master weights: the layer keeps its FP32 copy
    m = pimtrain.Macro(BITSERIAL)
    m.program(w)
    b = np.linspace(-1, 1, 40, dtype=np.float32)
    np.testing.assert_array_equal(layer.forward(x, b), m.multiply(x) + b)
    np.testing.assert_array_equal(layer.backward(dy), m.multiply(dy, transposed=True))
    counts = layer.counts_by_stage()
    assert counts["forward"]["bias_adds"] == 16 * 40
    sp = layer.sparsity()
    assert 0 <= sp["input_zero_fraction"] <= 1 and 0 < sp["array_utilization"] <= 1


def test_no_master_copy_keeps_what_the_array_holds():
    w, _, _ = operands()
    layer = pimtrain.MacroLayer(dict(BITSERIAL, master_weights=False))
    held = layer.program(w)
    assert not layer.master_weights
    assert not np.array_equal(held, w) and np.abs(held - w).max() < 0.01


def test_mistakes_raise_instead_of_aborting():
    w, x, _ = operands()
    m = pimtrain.Macro(BITSERIAL)
    with pytest.raises(ValueError, match="program"):
        m.multiply(x)
    m.program(w)
    with pytest.raises(ValueError, match="columns"):
        m.multiply(x[:, :50])
    with pytest.raises(ValueError, match="2-D"):
        m.multiply(x[0])
    with pytest.raises(pimtrain.ConfigError, match="unknown stage"):
        m.multiply(x, stage="sideways")
    with pytest.raises(pimtrain.ConfigError, match="input_bits"):
        pimtrain.Macro({"impl": "digital_bitserial", "input_bits": 99})
    with pytest.raises(pimtrain.ConfigError, match="no pim.macro block"):
        pimtrain.Macro({"seed": 1})


def test_macro_from_a_preset_and_float64_inputs():
    m = pimtrain.Macro("isscc25")
    assert m.config["impl"] == "fp_digital"
    w, x, _ = operands()
    m.program(w.astype(np.float64))
    assert m.multiply(x.astype(np.float64)).dtype == np.float32


def test_counts_priced_by_the_cost_model():
    w, x, dy = operands()
    m = pimtrain.Macro("tpim")
    m.program(w)
    m.multiply(x)
    model = pimtrain.CostModel("tpim")
    report = model.price([m])
    d = report.to_dict()
    assert d["energy"]["unit"] == "pJ" and d["energy"]["value"] > 0
    assert report.energy_pj == pytest.approx(d["energy"]["value"])
    assert "forward" in report.energy_by_stage
    low = model.price([m], point="low_power")
    assert low.energy_pj < report.energy_pj  # 0.75 V vs 1.05 V
    assert {p["name"] for p in model.operating_points} == {"low_power", "high_speed"}


def test_cpp_timing_peer_runs_the_same_call():
    w, x, _ = operands()
    m = pimtrain.Macro(BITSERIAL)
    m.program(w)
    assert m._time_multiply(x, repeats=3) > 0
    assert m.counts("forward")["macs"] == 3 * 16 * 100 * 40
