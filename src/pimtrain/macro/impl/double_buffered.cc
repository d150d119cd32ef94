// double_buffered: any macro with a second weight buffer (SP-PIM's double-buffered PIM macro).
// The array computes from one buffer while the next weights are written into the other; a switch
// makes the written buffer the computing one. Numbers are the inner macro's; what changes is
// where the write-back time goes: it overlaps computation (counted as shadow writes, which the
// cost model prices in energy but not in time) instead of stalling the array.
#include <memory>

#include "pimtrain/base/registry.h"
#include "pimtrain/macro/macro.h"

namespace pim {
namespace {

PIM_DECLARE_COUNTERS(
    DoubleBufferedCounters, "macro/double_buffered",
    {"shadow_weight_writes", "cell write", "WU",
     "cell writes into the idle buffer (hidden behind the other buffer's computation)"},
    {"buffer_switches", "switch", "WU", "the written buffer made the computing one"});

class DoubleBufferedMacro final : public Macro {
 public:
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Component("inner", "macro").Doc("the macro whose weight storage is doubled"));
    return s;
  }
  explicit DoubleBufferedMacro(const ConfigNode& p)
      : inner_(Registry<Macro>::Create(p.At("inner"))) {}

  const MacroSpec& spec() const override { return inner_->spec(); }
  CounterSet Counters() const override {
    CounterSet inner = inner_->Counters();
    return CounterSet::Union("macro/double_buffered", {&inner, &DoubleBufferedCounters()});
  }
  void SetRowSegment(int64_t rows_per_segment) override {
    inner_->SetRowSegment(rows_per_segment);
  }

  // Writes into the idle buffer, then switches. The inner macro's `weight_writes` become
  // `shadow_weight_writes` (hidden behind the other buffer's computation) and one
  // `buffer_switches` per programmed weight matrix is counted.
  void Program(ConstMatrixView w, const RunContext& ctx, ActionCounts& counts) override {
    ActionCounts c;
    inner_->Program(w, ctx, c);
    for (const auto& [name, n] : c.counts()) {
      counts.Add(name == "weight_writes" ? "shadow_weight_writes" : name, n);
    }
    counts.Add("buffer_switches", 1);
  }

  void Multiply(ConstMatrixView x, MatrixView y, Direction dir, const RunContext& ctx,
                ActionCounts& counts) override {
    inner_->Multiply(x, y, dir, ctx, counts);
  }
  void GradientCalc(ConstMatrixView x, ConstMatrixView dy, MatrixView dw, const RunContext& ctx,
                    ActionCounts& counts) override {
    inner_->GradientCalc(x, dy, dw, ctx, counts);
  }
  void ReadWeights(MatrixView w) const override { inner_->ReadWeights(w); }

  std::map<std::string, double> HardwareParams() const override {
    auto hw = inner_->HardwareParams();
    hw["weight_buffers"] = 2;  // the storage is doubled (area), the compute is not
    return hw;
  }

 private:
  std::unique_ptr<Macro> inner_;
};

PIM_REGISTER(Macro, DoubleBufferedMacro, "double_buffered",
             "any macro with two weight buffers: write-back overlaps computation (SP-PIM)");

}  // namespace
}  // namespace pim
