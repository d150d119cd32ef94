"""pimtrain.torch.convert on graph-shaped PyTorch models: residual additions and attention."""
import pytest

pimtrain = pytest.importorskip("pimtrain")
torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

pt = pytest.importorskip("pimtrain.torch")

MACRO = {"impl": "digital_bitserial", "rows": 64, "cols": 32, "forward_weight_read": "nearest",
         "weight_bits_backward": 16}


class Net(nn.Module):
    """A residual conv block, then tokens through a pre-norm attention block, then a head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.relu(h + self.c2(h))                     # residual addition
        t = h.flatten(2).transpose(1, 2)               # (N, 16 tokens, 8)
        n = self.norm(t)
        t = t + self.attn(n, n, n, need_weights=False)[0]
        return self.head(t.mean(1))


def test_convert_puts_residual_and_attention_products_on_the_macro_and_trains():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(4, 1, 4, 4)
    exact = model(x).detach()
    pt.convert(model, MACRO)
    assert isinstance(model.attn, pt.PimMultiheadAttention)
    names = [n for n, _ in pt.pim_layers(model)]
    assert names == ["c1", "c2", "attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj",
                     "head"]
    y = model(x)
    # Quantized products, close to the FP32 model with the same weights.
    assert (y.detach() - exact).abs().max() < 0.05 * exact.abs().max() + 1e-3
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    labels = torch.tensor([0, 1, 2, 0])
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    c = pt.counts(model)
    for name in ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj"]:
        # 9 training-mode passes (the check above and 8 steps) of 4 x 16 tokens x 8 x 8.
        assert c[name]["forward"]["macs"] == 9 * 4 * 16 * 8 * 8, name
        assert c[name]["backward"]["macs"] > 0, name


def test_converted_attention_matches_torch_attention_for_both_layouts():
    torch.manual_seed(1)
    for batch_first in (True, False):
        mha = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        q = torch.randn(3, 5, 16)
        ref, w_ref = mha(q, q, q)
        wrapper = nn.Sequential(mha)
        pt.convert(wrapper, dict(MACRO, weight_bits=16, input_bits=16))
        out, w = wrapper[0](q, q, q)
        assert out.shape == ref.shape and w.shape == w_ref.shape
        assert (out - ref).abs().max() < 0.02 * ref.abs().max() + 1e-3
