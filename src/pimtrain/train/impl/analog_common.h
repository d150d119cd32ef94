// What the analog training algorithms share (docs/devices.md, "Training algorithms"): FP and BP
// through the arrays, the digital gradients of everything that is not an analog weight (biases,
// layers off the arrays), and a per-layer WU hook that writes into the devices. No digital
// master copy of an analog weight exists: after WU the layer's weight tensor is what the
// devices hold.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/device/trainable.h"
#include "pimtrain/device/unit_cell.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/train/algorithm.h"
#include "pimtrain/train/numeric_guard.h"

namespace pim {

struct AnalogLayer {
  int index = 0;
  StagedMatmul* matmul = nullptr;
  Macro* macro = nullptr;
  AnalogTrainable* trainable = nullptr;
  Parameter* weight = nullptr;
  int64_t rows = 0, cols = 0;
};

class AnalogAlgorithm : public TrainingAlgorithm {
 public:
  // The device-mode layers (from their weight shapes) and the state each keeps between steps:
  // the read weights of C when its devices have write noise, and what the algorithm adds
  // (AllocateState). All of it goes into checkpoints (StateTensors), so a resumed run is
  // bit-identical to an uninterrupted one.
  void Setup(Network& net, uint64_t seed) override {
    seed_ = seed;
    slots_.clear();
    state_.clear();
    for (int i = 0; i < net.size(); ++i) {
      StagedMatmul* mm = net.layer(i).matmul();
      if (mm == nullptr || !mm->on_macro()) continue;
      auto* at = dynamic_cast<AnalogTrainable*>(mm->macro());
      if (at == nullptr || !at->device_mode()) continue;
      const Shape& ws = net.layer(i).Parameters().front()->value.shape();
      if (ws.rank() != 2) continue;
      slots_.push_back({i, at, ws[0], ws[1]});
      if (at->weight_array().has_write_noise()) AddState(i, "c_read", ws[0] * ws[1]);
      if (auto* g = UnitCellState(at->weight_array())) {
        AddState(i, "c_cells", static_cast<int64_t>(g->size()));  // a pair's devices
      }
      if (!at->out_scales().empty()) {
        // The mapping's scales and C's device values (W = alpha W_dev): a resumed run's
        // programming recomputes alpha from the trained weights, so both are restored.
        AddState(i, "out_scale", static_cast<int64_t>(at->out_scales().size()));
        AddState(i, "c_hidden", ws[0] * ws[1]);
      }
      AllocateState(i, ws[0], ws[1], *at);
    }
  }
  NamedTensors StateTensors() override {
    for (const Slot& s : slots_) {
      if (Tensor* t = FindState(s.index, "c_read")) {
        const float* r = s.trainable->weight_array().mutable_read();
        std::copy(r, r + t->numel(), t->data());
      }
      if (Tensor* t = FindState(s.index, "c_cells")) {
        const std::vector<float>& g = *UnitCellState(s.trainable->weight_array());
        std::copy(g.begin(), g.end(), t->data());
      }
      if (Tensor* t = FindState(s.index, "out_scale")) {
        const std::vector<float>& a = s.trainable->out_scales();
        std::copy(a.begin(), a.end(), t->data());
        const float* h = s.trainable->weight_array().hidden();
        Tensor& th = State(s.index, "c_hidden");
        std::copy(h, h + th.numel(), th.data());
      }
      SyncState(s, /*to_tensors=*/true);
    }
    NamedTensors out;
    for (auto& [name, t] : state_) out.emplace_back(name, &t);
    return out;
  }
  void RestoreState() override {
    for (const Slot& s : slots_) {
      if (Tensor* t = FindState(s.index, "c_read")) {
        std::copy(t->data(), t->data() + t->numel(), s.trainable->weight_array().mutable_read());
      }
      if (Tensor* t = FindState(s.index, "c_cells")) {
        std::copy(t->data(), t->data() + t->numel(),
                  UnitCellState(s.trainable->weight_array())->data());
      }
      if (Tensor* t = FindState(s.index, "out_scale")) {
        std::copy(t->data(), t->data() + t->numel(), s.trainable->out_scales().data());
        const Tensor& th = State(s.index, "c_hidden");
        std::copy(th.data(), th.data() + th.numel(),
                  s.trainable->weight_array().mutable_hidden());
      }
      SyncState(s, /*to_tensors=*/false);
    }
  }

  StepResult TrainStep(Network& net, const Tensor& x, const int32_t* labels, Loss& loss,
                       Optimizer& opt, double lr, const StepContext& ctx) override {
    const Tensor& logits = net.Forward(x, ctx);
    const int n = net.size();
    LossResult res = loss.Compute(logits, labels, &net.error(n));
    CheckActivationsFinite(net, ctx);
    CheckLossFinite(res.loss_sum, ctx);
    std::vector<AnalogLayer> analog;
    for (int i = n - 1; i >= 0; --i) {
      Layer& layer = net.layer(i);
      AnalogLayer al;
      if (Find(net, i, al)) {
        // GC of the analog weight happens in the array (WU); the bias gradient is digital.
        std::vector<Parameter*> ps = layer.Parameters();
        const Tensor& dy = net.error(i + 1);
        const int64_t m = dy.shape()[0];
        for (Parameter* p : ps) {
          if (p == al.weight) {
            p->grad.Zero();
          } else if (p->name == "bias") {
            ColumnSums(dy.data(), m, al.cols, p->grad.data(), PoolOf(ctx));
          }
        }
        analog.push_back(al);
      } else {
        layer.ComputeGradient(net.error(i + 1), ctx);
      }
      if (i > 0) {
        layer.PropagateError(net.error(i + 1), net.error(i), ctx);
        CheckFinite(net.error(i), net, i, Stage::kBackward, "input error", ctx);
      }
    }
    opt.Step(lr);  // digital parameters; the analog weights have zero gradient here
    for (int i = 0; i < n; ++i) {
      bool is_analog = false;
      for (const AnalogLayer& al : analog) is_analog |= al.index == i;
      if (!is_analog) net.layer(i).CommitUpdate(ctx);
    }
    for (AnalogLayer& al : analog) {
      const Tensor& xin = net.activation(al.index);
      const Tensor& dy = net.error(al.index + 1);
      const int64_t m = dy.shape()[0];
      RunContext rc;
      rc.seed = ctx.seed;
      rc.step = ctx.step;
      rc.layer = al.index;
      rc.stage = Stage::kUpdate;
      rc.pool = ctx.pool;
      ActionCounts counts;
      UpdateLayer(al, ConstMatrixView(xin.data(), m, al.rows, al.rows),
                  ConstMatrixView(dy.data(), m, al.cols, al.cols), static_cast<float>(lr), rc,
                  counts);
      al.matmul->AddCounts(Stage::kUpdate, counts);
      al.macro->ReadWeights(al.weight->value.AsMatrix());
    }
    return {res.loss_sum, res.correct};
  }

 protected:
  struct Slot {
    int index = 0;
    AnalogTrainable* trainable = nullptr;
    int64_t rows = 0, cols = 0;
  };
  // A layer's own state tensors (AddState) and the copies between them and the device arrays.
  virtual void AllocateState(int layer, int64_t rows, int64_t cols, AnalogTrainable& at) {}
  virtual void SyncState(const Slot& s, bool to_tensors) {}
  Tensor& AddState(int layer, const std::string& name, int64_t n) {
    return state_.insert_or_assign(StateName(layer, name), Tensor(Shape{n})).first->second;
  }
  Tensor* FindState(int layer, const std::string& name) {
    auto it = state_.find(StateName(layer, name));
    return it == state_.end() ? nullptr : &it->second;
  }
  Tensor& State(int layer, const std::string& name) {
    Tensor* t = FindState(layer, name);
    PIM_CHECK_MSG(t != nullptr, "analog algorithm state before Setup");
    return *t;
  }
  uint64_t seed() const { return seed_; }

  // Writes one layer's update W <- W - lr x^T d into its devices (x: m x rows, d: m x cols).
  virtual void UpdateLayer(AnalogLayer& al, ConstMatrixView x, ConstMatrixView d, float lr,
                           const RunContext& rc, ActionCounts& counts) = 0;
  virtual const char* name() const = 0;

 private:
  static std::string StateName(int layer, const std::string& name) {
    std::string s = std::to_string(layer);  // (appends: GCC 12 misreads "L" + string)
    s.insert(s.begin(), 'L');
    s += '.';
    s += name;
    return s;
  }
  uint64_t seed_ = 0;
  std::vector<Slot> slots_;
  std::map<std::string, Tensor> state_;  // node-stable: StateTensors hands out pointers

  // Layer i as an analog layer: on an analog_crossbar in device mode, a fully connected layer
  // (conv layers would update per im2col row: not modelled; UnsupportedError).
  bool Find(Network& net, int i, AnalogLayer& al) const {
    StagedMatmul* mm = net.layer(i).matmul();
    if (mm == nullptr || !mm->on_macro()) return false;
    auto* at = dynamic_cast<AnalogTrainable*>(mm->macro());
    if (at == nullptr || !at->device_mode()) {
      throw UnsupportedError(std::string("train.algorithm ") + name() + ": layer " +
                             std::to_string(i) + " (" + net.layer(i).Summary() +
                             ") is not on an analog_crossbar with a device, update or io block");
    }
    Parameter* w = net.layer(i).Parameters().front();
    const int64_t rows = w->value.shape()[0], cols = w->value.shape()[1];
    const Tensor& xin = net.activation(i);
    if (xin.numel() != xin.shape()[0] * rows) {
      throw UnsupportedError(std::string("train.algorithm ") + name() + ": layer " +
                             std::to_string(i) + " (" + net.layer(i).Summary() +
                             ") is not fully connected; in-array updates cover linear layers");
    }
    al.index = i;
    al.matmul = mm;
    al.macro = mm->macro();
    al.trainable = at;
    al.weight = w;
    al.rows = rows;
    al.cols = cols;
    return true;
  }
};

}  // namespace pim
