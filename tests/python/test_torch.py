"""pimtrain.torch: PimLinear / PimConv2d run FP, BP, GC on the macro and reprogram after WU."""
import numpy as np
import pytest

pimtrain = pytest.importorskip("pimtrain")
torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

pt = pytest.importorskip("pimtrain.torch")

MACRO = {"impl": "digital_bitserial", "rows": 64, "cols": 32, "forward_weight_read": "nearest",
         "weight_bits_backward": 16}


def test_pim_linear_runs_every_stage_on_the_macro():
    torch.manual_seed(0)
    lin = pt.PimLinear(100, 40, MACRO, layer=3, seed=5)
    x = torch.rand(16, 100, requires_grad=True)
    y = lin(x)
    dy = torch.randn(16, 40) * 0.01
    y.backward(dy)
    ref = pimtrain.MacroLayer(MACRO, layer=3, seed=5)
    w = lin.weight.detach().t().contiguous().numpy()
    ref.program(w)
    b = lin.bias.detach().numpy()
    np.testing.assert_array_equal(y.detach().numpy(), ref.forward(x.detach().numpy(), b))
    np.testing.assert_array_equal(x.grad.numpy(), ref.backward(dy.numpy()))
    np.testing.assert_array_equal(lin.weight.grad.numpy(), ref.gradient(x.detach().numpy(), dy.numpy()).T)
    np.testing.assert_allclose(lin.bias.grad.numpy(), dy.sum(0).numpy(), rtol=1e-5, atol=1e-7)
    # Quantized, but close to nn.Linear's result.
    exact = F.linear(x.detach(), lin.weight.detach(), lin.bias.detach())
    assert (y.detach() - exact).abs().max() < 0.05 * exact.abs().max()
    c = pt.counts(nn.Sequential(lin))["0"]
    assert c["forward"]["macs"] == c["backward"]["macs"] == c["gradient"]["macs"] == 16 * 100 * 40


def test_weights_are_reprogrammed_after_each_optimizer_step():
    torch.manual_seed(0)
    lin = pt.PimLinear(20, 8, dict(MACRO, master_weights=False))
    grid = lin.weight.detach().clone()  # what the array holds after the first programming
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    x = torch.rand(4, 20)
    lin(x).sum().backward()
    opt.step()
    stepped = lin.weight.detach().clone()
    lin(x)  # sees the new version and reprograms; no master copy: takes the array's weights
    assert not torch.equal(lin.weight.detach(), grid)
    assert not torch.equal(lin.weight.detach(), stepped)
    assert (lin.weight.detach() - stepped).abs().max() < 0.01
    held = lin.macro_layer.program(lin.weight.detach().t().contiguous().numpy())
    np.testing.assert_array_equal(held.T, lin.weight.detach().numpy())  # already on the grid
    assert lin.macro_layer.counts_by_stage()["update"]["weight_writes"] > 0


def test_pim_conv2d_matches_conv2d_and_its_gradients():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=2)
    pconv = pt.PimConv2d(3, 4, 3, MACRO, padding=1, stride=2)
    pconv.load_state_dict(conv.state_dict())
    pconv.program()
    x = torch.rand(2, 3, 9, 9, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    y, yr = pconv(x), conv(xr)
    assert y.shape == yr.shape == (2, 4, 5, 5)
    assert (y - yr).abs().max() < 0.05 * yr.abs().max()
    g = torch.randn_like(yr)
    y.backward(g)
    yr.backward(g)
    assert (x.grad - xr.grad).abs().max() < 0.05 * xr.grad.abs().max()
    assert (pconv.weight.grad - conv.weight.grad).abs().max() < 0.05 * conv.weight.grad.abs().max()


def test_convert_swaps_layers_and_prices_a_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10))
    x = torch.rand(8, 1, 8, 8)
    before = model(x).detach()
    pt.convert(model, "tpim")
    assert [type(m).__name__ for m in model] == ["PimConv2d", "ReLU", "Flatten", "PimLinear",
                                                 "ReLU", "PimLinear"]
    assert [m.macro_layer.layer for _, m in pt.pim_layers(model)] == [0, 1, 2]
    assert all(not any(c.values()) for c in pt.counts(model)["0"].values())  # set-up not counted
    with torch.no_grad():
        after = model.eval()(x)
    assert (after - before).abs().max() < 0.1 * before.abs().max()
    assert not pt.counts(model)["0"]["forward"]  # evaluation passes are not counted
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    F.cross_entropy(model(x), torch.arange(8)).backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        model(x)  # evaluation: reprograms, counts nothing
    counts = pt.counts(model)
    assert counts["0"]["forward"]["macs"] == 8 * 64 * 9 * 4
    assert counts["3"]["update"]["weight_writes"] > 0
    assert "backward" not in counts["0"] or not counts["0"]["backward"]  # input error not needed
    report = pt.cost(model, "tpim", samples=8, batch_size=8)
    d = report.to_dict()
    assert d["energy"]["value"] > 0 and d["samples"] == 8
    assert set(report.energy_by_layer) == {0, 1, 2}
    pt.reset_counts(model)
    assert not pt.counts(model)["5"]["forward"]


def test_convert_placement_hidden_and_unsupported_layers():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4))
    pt.convert(model, MACRO, placement="hidden")
    assert [type(m).__name__ for m in model] == ["Linear", "PimLinear", "Linear"]
    with pytest.raises(pimtrain.UnsupportedError, match="groups 1"):
        pt.convert(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), MACRO)
    with pytest.raises(pimtrain.ConfigError, match="no pim.macro"):
        pt.convert(nn.Sequential(nn.Linear(2, 2)), {"seed": 1})


def test_training_from_torch_follows_the_session(tiny_data):
    """The same MLP, initial weights, data and order as a Session: the same accuracy."""
    cfg = pimtrain.Config("tpim", {"model": {"impl": "mlp", "layers": [784, 32, 10]}},
                          sets=[f"data.dir={tiny_data}", "train.epochs=1", "train.batch_size=32",
                                "train.eval_batch_size=64", "train.schedule=constant"])
    s = pimtrain.Session(cfg)
    params, data = s.parameters(), s.data()
    macro = cfg["pim"]["macro"]
    l1 = pt.PimLinear(784, 32, macro, layer=1, seed=1)
    l2 = pt.PimLinear(32, 10, macro, layer=3, seed=1)
    for lin, i in ((l1, 1), (l2, 3)):
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(params[f"layers.{i}.weight"].T))
            lin.bias.copy_(torch.from_numpy(params[f"layers.{i}.bias"]))
        lin.program(step=0)
    model = nn.Sequential(nn.Flatten(), l1, nn.ReLU(), l2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = (torch.from_numpy(a) for a in data["train"])
    order = torch.from_numpy(pimtrain.epoch_order(1, 0, len(y)))
    for k in range(0, len(y), 32):
        idx = order[k:k + 32]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx].long()).backward()
        opt.step()
    model.eval()
    xt, yt = (torch.from_numpy(a) for a in data["test"])
    with torch.no_grad():
        torch_acc = float((model(xt).argmax(1) == yt.long()).float().mean())
    session_acc = s.train()["test_accuracy"]
    assert abs(torch_acc - session_acc) <= 2 / 64  # at most two of 64 test samples differ


def test_float64_inputs_and_batches_of_any_rank():
    lin = pt.PimLinear(6, 3, MACRO)
    x = torch.rand(2, 5, 6, dtype=torch.float64, requires_grad=True)
    y = lin(x)
    assert y.shape == (2, 5, 3) and y.dtype == torch.float32
    y.sum().backward()
    assert x.grad.dtype == torch.float64 and x.grad.shape == x.shape
