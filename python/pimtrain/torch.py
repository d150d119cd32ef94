"""PyTorch layers whose products run on a simulated PIM macro, bit-accurately.

    import pimtrain.torch as pt
    model = pt.convert(model, "tpim")        # every nn.Linear / nn.Conv2d now on T-PIM's macro
    ... train with any torch optimizer ...
    pt.counts(model)                          # actions per layer and stage (training passes)
    pt.cost(model, "tpim", samples=n, batch_size=64).to_dict()

Each PimLinear / PimConv2d holds a pimtrain.MacroLayer (the C++ StagedMatmul every pimtrain
layer uses), so the four stages run as in `pimtrain train`:

- FP: Y = X W through the macro (forward read), bias added digitally.
- BP: dX = dY W^T through the same stored array read transposed.
- GC: dW = X^T dY on the macro's gradient path (MacroLayer.gradient), i.e. as the chip computes
  it: that is where a chip's gradient precision (T-PIM's gradient_bits, a format's rounding)
  shows, and it keeps a torch run comparable with the CLI's. The bias gradient is the column
  sum of dY in FP32, summed in row order as pimtrain does.
- WU: the torch optimizer updates the FP32 parameter; the layer notices the change (the
  parameter's version counter) and reprograms the macro before its next forward. A macro
  without master weights (`master_weights: false`) then writes back what the array holds,
  so the parameter is the chip's only copy, as in pimtrain.

Tensors are float32 on the CPU. The training step counter that keys a macro's noise and
stochastic rounding advances once per training-mode forward (a layer used twice per step would
advance it twice). Only training-mode passes are counted.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import _pimtrain as _native  # im2col / col2im kernels (private)
import pimtrain as _pim

__all__ = ["PimLinear", "PimConv2d", "PimMultiheadAttention", "convert", "pim_layers", "counts", "reset_counts",
           "sparsity", "cost"]


def _np(t):
    return t.detach().to(dtype=torch.float32, device="cpu").contiguous().numpy()


class _MacroMatmul(torch.autograd.Function):
    """y = x W + b on the layer's macro; backward: dX on the transposed read, dW on GC."""

    @staticmethod
    def forward(ctx, x2d, weight, bias, layer):
        step = layer._call_step()
        y = layer._mm.forward(_np(x2d), None if bias is None else _np(bias), step)
        ctx.layer, ctx.step, ctx.has_bias = layer, step, bias is not None
        ctx.save_for_backward(x2d)
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, dy):
        (x2d,) = ctx.saved_tensors
        layer, step = ctx.layer, ctx.step
        dy_np = _np(dy)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.from_numpy(layer._mm.backward(dy_np, step))
        if ctx.needs_input_grad[1]:
            dw = layer._grad_from_matrix(torch.from_numpy(layer._mm.gradient(_np(x2d), dy_np, step)))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # Row-order FP32 column sums (cumsum accumulates sequentially), as ColumnSums does.
            db = torch.from_numpy(np.cumsum(dy_np, axis=0, dtype=np.float32)[-1].copy())
        return dx, dw, db, None


class _MacroConv(torch.autograd.Function):
    """A square, equal-stride, equal-padding conv on the macro with pimtrain's own NHWC im2col
    and col2im (conv2d's kernels): x (NCHW) -> cols -> cols W (+ b) -> y (NCHW). Backward: the
    transposed read and col2im for dX, GC on the saved cols for dW. Saves the strided copies
    F.unfold's layout needs ((n, c*kh*kw, L) permuted to (n*L, kh*kw*c)): the same cols, the
    products the same, dX summed in conv2d's order."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer):
        n, c, h, w = x.shape
        k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        # The layer's columns buffer of the last step is reused once no backward still needs it
        # (its GC has run): no fresh pages each step.
        pending = getattr(layer, "_cols_pending", 0)
        cols = _native._im2col(_np(x.permute(0, 2, 3, 1)), k, s, p,
                               getattr(layer, "_cols_buffer", None) if pending == 0 else None)
        layer._cols_buffer = cols
        if any(ctx.needs_input_grad):
            layer._cols_pending = pending + 1
        step = layer._call_step()
        y = layer._mm.forward(cols, None if bias is None else _np(bias), step)
        ctx.layer, ctx.step, ctx.has_bias, ctx.cols, ctx.geom = (layer, step, bias is not None,
                                                                  cols, (n, h, w, c, k, s, p))
        # NCHW with NHWC strides (channels_last): the macro's own layout, no copy. Torch's
        # batch norm, relu and additions run on it as is, and the errors coming back (and the
        # next conv's input) are NHWC already, so neither direction copies.
        return torch.from_numpy(y).reshape(n, oh, ow, -1).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, dy):
        layer, step = ctx.layer, ctx.step
        n, h, w, c, k, s, p = ctx.geom
        dy_np = _np(dy.permute(0, 2, 3, 1)).reshape(-1, dy.shape[1])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            # dcols is read by col2im alone, right here: the last step's array is reused.
            dcols = layer._mm.backward(dy_np, step, getattr(layer, "_dcols_buffer", None))
            layer._dcols_buffer = dcols
            dx = torch.from_numpy(_native._col2im(dcols, n, h, w, c, k, s, p))
            dx = dx.permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            dw = layer._grad_from_matrix(torch.from_numpy(layer._mm.gradient(ctx.cols, dy_np,
                                                                             step)))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = torch.from_numpy(np.cumsum(dy_np, axis=0, dtype=np.float32)[-1].copy())
        ctx.cols = None
        layer._cols_pending -= 1
        return dx, dw, db, None


class _OnMacro:
    """What PimLinear and PimConv2d share: the MacroLayer, programming, step counting."""

    def _attach(self, macro, layer, seed, position_rows=0, channel_wise=False):
        self._mm = _pim.MacroLayer(macro, layer=layer, seed=seed, position_rows=position_rows,
                                   channel_wise=channel_wise)
        self._mm.set_summary(self._summary())
        self._train_steps = 0
        self._programmed_version = None
        self.program(step=0)
        self._mm.reset_counts()  # the initial programming is set-up, not training (as pimtrain)

    def program(self, step=None):
        """Writes the current weights into the macro (WU). Called automatically before a
        forward when the weights changed in place (optimizer steps); call it after editing
        weight.data directly."""
        if step is None:
            step = max(self._train_steps - 1, 0)
        held = self._mm.program(self._weight_matrix(), step)
        if not self._mm.master_weights:
            with torch.no_grad():
                self.weight.copy_(self._grad_from_matrix(torch.from_numpy(held)))
        self._programmed_version = self.weight._version

    def _sync(self):
        if self._programmed_version != self.weight._version:
            self.program()
        self._mm.counting = self.training

    def _call_step(self):
        if self.training and torch.is_grad_enabled():
            self._train_steps += 1
            return self._train_steps - 1
        return 0

    @property
    def macro_layer(self):
        """The pimtrain.MacroLayer (counts_by_stage(), sparsity(), spec, config)."""
        return self._mm


class PimLinear(_OnMacro, nn.Linear):
    """nn.Linear on a PIM macro. `macro`: a macro block ({"impl": ..., ...}), a macro name, or
    a config / preset name whose pim.macro is used. `layer` and `seed` key the macro's noise."""

    def __init__(self, in_features, out_features, macro, bias=True, layer=0, seed=0):
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._attach(macro, layer, seed)

    def _summary(self):
        return f"linear {self.in_features} -> {self.out_features}"

    def _weight_matrix(self):  # the macro's orientation: rows = in (reduction), cols = out
        return _np(self.weight.t())

    def _grad_from_matrix(self, m):
        return m.t().contiguous()

    def forward(self, x):
        self._sync()
        x2d = x.reshape(-1, self.in_features).to(torch.float32)
        y = _MacroMatmul.apply(x2d, self.weight, self.bias, self)
        return y.reshape(*x.shape[:-1], self.out_features)


class PimConv2d(_OnMacro, nn.Conv2d):
    """nn.Conv2d (groups 1, dilation 1, zero padding) on a PIM macro, as im2col: the kernel is
    a (kh*kw*in) x out matrix with rows ordered (kh, kw, in) as pimtrain's conv2d orders them.
    `channel_wise=True` maps each kernel position's rows onto their own arrays
    (pim.conv_mapping: channel_wise)."""

    def __init__(self, in_channels, out_channels, kernel_size, macro, stride=1, padding=0,
                 bias=True, layer=0, seed=0, channel_wise=False):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride,
                           padding=padding, bias=bias)
        if isinstance(self.padding, str):
            raise _pim.UnsupportedError(f"PimConv2d: padding '{self.padding}' is not supported; "
                                        "give the padding in pixels")
        self._attach(macro, layer, seed, position_rows=in_channels, channel_wise=channel_wise)

    def _summary(self):
        kh, kw = self.kernel_size
        return f"conv2d {kh}x{kw} {self.in_channels} -> {self.out_channels}"

    def _weight_matrix(self):
        kh, kw = self.kernel_size
        return _np(self.weight.permute(2, 3, 1, 0).reshape(kh * kw * self.in_channels,
                                                           self.out_channels))

    def _grad_from_matrix(self, m):
        kh, kw = self.kernel_size
        return m.reshape(kh, kw, self.in_channels, self.out_channels).permute(3, 2, 0, 1).contiguous()

    def forward(self, x):
        self._sync()
        if (self.kernel_size[0] == self.kernel_size[1] and self.stride[0] == self.stride[1]
                and self.padding[0] == self.padding[1] and x.dim() == 4):
            return _MacroConv.apply(x.to(torch.float32), self.weight, self.bias, self)
        n, c, h, w = x.shape
        kh, kw = self.kernel_size
        (ph, pw), (sh, sw) = self.padding, self.stride
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = F.unfold(x.to(torch.float32), (kh, kw), padding=(ph, pw), stride=(sh, sw))
        # (n, c*kh*kw, L) -> (n*L, kh*kw*c): rows ordered (kh, kw, c) like the weight matrix.
        x2d = cols.reshape(n, c, kh * kw, oh * ow).permute(0, 3, 2, 1).reshape(n * oh * ow, -1)
        y = _MacroMatmul.apply(x2d, self.weight, self.bias, self)
        return y.reshape(n, oh, ow, self.out_channels).permute(0, 3, 1, 2).contiguous()


class PimMultiheadAttention(nn.Module):
    """nn.MultiheadAttention with its Q, K, V and output projections as PimLinear layers on the
    macro (the packed in_proj_weight split into three). The two activation-activation products,
    Q K^T and the attention-weighted V, run digitally in torch, as pimtrain's attention_core
    does by default. Same call signature and results layout as nn.MultiheadAttention."""

    def __init__(self, old, macro, layer=0, seed=0):
        super().__init__()
        if old.in_proj_weight is None or old.bias_k is not None or old.add_zero_attn:
            raise _pim.UnsupportedError("convert: nn.MultiheadAttention with separate kdim/vdim, "
                                        "bias_k/bias_v or add_zero_attn is not supported")
        d, has_bias = old.embed_dim, old.in_proj_bias is not None
        self.embed_dim, self.num_heads, self.batch_first = d, old.num_heads, old.batch_first
        self.dropout = old.dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            PimLinear(d, d, macro, bias=b, layer=layer + i, seed=seed)
            for i, b in enumerate([has_bias, has_bias, has_bias, old.out_proj.bias is not None]))
        with torch.no_grad():
            for i, proj in enumerate([self.q_proj, self.k_proj, self.v_proj]):
                proj.weight.copy_(old.in_proj_weight[i * d:(i + 1) * d])
                if has_bias:
                    proj.bias.copy_(old.in_proj_bias[i * d:(i + 1) * d])
            self.out_proj.weight.copy_(old.out_proj.weight)
            if old.out_proj.bias is not None:
                self.out_proj.bias.copy_(old.out_proj.bias)
        for proj in [self.q_proj, self.k_proj, self.v_proj, self.out_proj]:
            proj.program(step=0)
            proj.macro_layer.reset_counts()
        self.train(old.training)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        n, tq, d = query.shape
        h, dh = self.num_heads, d // self.num_heads
        split = lambda t: t.reshape(n, -1, h, dh).transpose(1, 2)
        q, k, v = split(self.q_proj(query)), split(self.k_proj(key)), split(self.v_proj(value))
        scores = q @ k.transpose(-2, -1) / math.sqrt(dh)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
                else scores + attn_mask
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :].bool(), float("-inf"))
        a = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            a = F.dropout(a, self.dropout)
        out = self.out_proj((a @ v).transpose(1, 2).reshape(n, tq, d))
        if not self.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if need_weights:
            weights = a.mean(1) if average_attn_weights else a
        return out, weights


def _pim_settings(macro):
    """(macro block, placement, conv_mapping, seed) from a block, a name or a whole config."""
    if isinstance(macro, dict) and "impl" in macro:
        return macro, "all", "im2col", 0
    if isinstance(macro, str) and macro in _pim.describe("macro")["macro"]:
        return macro, "all", "im2col", 0
    cfg = macro if isinstance(macro, _pim.Config) else _pim.Config(macro)
    d = cfg.to_dict()
    pim = d.get("pim") or {}
    if pim.get("macro") is None:
        raise _pim.ConfigError("convert: the config has no pim.macro block")
    return pim["macro"], pim["placement"], pim["conv_mapping"], d["seed"]


def convert(model, macro, placement=None, conv_mapping=None, seed=None):
    """Replaces the model's nn.Linear, nn.Conv2d and nn.MultiheadAttention layers (in module
    order) by PimLinear, PimConv2d and PimMultiheadAttention on `macro`, keeping their weights;
    returns the model (changed in place). The model's forward is untouched, so graph structure
    written in it (residual additions, concatenation, attention) trains on the macro as is.

    `macro`: a macro block, a macro name, or a config / preset name (then its pim.placement,
    pim.conv_mapping and seed apply unless given here). placement "hidden" leaves the first
    and last weighted layers in FP32. The k-th converted layer gets layer index k."""
    block, cfg_placement, cfg_mapping, cfg_seed = _pim_settings(macro)
    placement = placement or cfg_placement
    conv_mapping = conv_mapping or cfg_mapping
    seed = cfg_seed if seed is None else seed
    if placement not in ("all", "hidden"):
        raise _pim.ConfigError(f"convert: placement must be 'all' or 'hidden', got '{placement}'")
    if conv_mapping not in ("im2col", "channel_wise"):
        raise _pim.ConfigError("convert: conv_mapping must be 'im2col' or 'channel_wise', got "
                               f"'{conv_mapping}'")
    found = []
    for parent in model.modules():
        # An attention module's projections are replaced with it (its out_proj is an nn.Linear
        # that nn.MultiheadAttention never calls as a module).
        if isinstance(parent, (nn.MultiheadAttention, PimMultiheadAttention)):
            continue
        for name, child in parent.named_children():
            if isinstance(child, _OnMacro):
                continue
            if isinstance(child, (nn.Linear, nn.Conv2d, nn.MultiheadAttention)):
                found.append((parent, name, child))
    if placement == "hidden":
        found = found[1:-1]
    k = 0
    for parent, name, old in found:
        if isinstance(old, nn.MultiheadAttention):
            # Residual additions and the rest of the forward stay the model's own code: only the
            # weighted products move onto the macro. Four layer indices: Q, K, V, output.
            setattr(parent, name, PimMultiheadAttention(old, block, layer=k, seed=seed))
            k += 4
            continue
        if isinstance(old, nn.Linear):
            new = PimLinear(old.in_features, old.out_features, block, bias=old.bias is not None,
                            layer=k, seed=seed)
        else:
            if old.groups != 1 or old.dilation != (1, 1) or old.padding_mode != "zeros":
                raise _pim.UnsupportedError(
                    f"convert: {name}: PimConv2d supports groups 1, dilation 1, zero padding")
            new = PimConv2d(old.in_channels, old.out_channels, old.kernel_size, block,
                            stride=old.stride, padding=old.padding, bias=old.bias is not None,
                            layer=k, seed=seed, channel_wise=conv_mapping == "channel_wise")
        with torch.no_grad():
            new.weight.copy_(old.weight)
            if old.bias is not None:
                new.bias.copy_(old.bias)
        new.train(old.training)
        new.program(step=0)
        new.macro_layer.reset_counts()
        setattr(parent, name, new)
        k += 1
    return model


def pim_layers(model):
    """(name, layer) of every PimLinear / PimConv2d in the model, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _OnMacro)]


def counts(model):
    """{layer name: {stage: {action: count}}} of the training passes since the last reset."""
    return {n: m.macro_layer.counts_by_stage() for n, m in pim_layers(model)}


def sparsity(model):
    """{layer name: zero fractions of inputs, errors, weights; array utilization}."""
    return {n: m.macro_layer.sparsity() for n, m in pim_layers(model)}


def reset_counts(model):
    for _, m in pim_layers(model):
        m.macro_layer.reset_counts()


def cost(model, cost_config, samples=0, batch_size=1, point=None):
    """Prices the model's counts with a cost model: `cost_config` is a `cost:` block, or a
    config / preset name with one. `samples` training samples in steps of `batch_size` make a
    training period (per-sample figures, pipelining). Returns a pimtrain.CostReport
    (to_dict(), headline(), table())."""
    model_ = _pim.CostModel(cost_config)
    return model_.price([m.macro_layer for _, m in pim_layers(model)], samples=samples,
                        batch_size=batch_size, point=point)
