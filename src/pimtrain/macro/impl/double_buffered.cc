// double_buffered: any macro with a second weight buffer (SP-PIM's double-buffered PIM macro).
// The array computes from one buffer while the next weights are written into the other; a switch
// makes the written buffer the computing one. Numbers are the inner macro's; what changes is
// where the write-back time goes: it overlaps computation (counted as shadow writes, which the
// cost model prices in energy but not in time) instead of stalling the array.
#include <memory>
#include <string>
#include <vector>

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
    s.Add(Param::Enum("second_buffer", {"shadow", "transposed_copy", "idle"})
              .Default("shadow")
              .Doc("what the second buffer does: shadow (the next weights are written into it "
                   "while the other computes: write-back hidden), transposed_copy (it holds W^T, "
                   "so BP is a forward read of that copy: a chip without a transposable array "
                   "run stage after stage; both copies written in time), idle (unused; the "
                   "write-back stalls the array)"));
    return s;
  }
  explicit DoubleBufferedMacro(const ConfigNode& p)
      : inner_(Registry<Macro>::Create(p.At("inner"))) {
    const std::string mode = p.GetString("second_buffer");
    mode_ = mode == "shadow" ? Mode::kShadow : mode == "idle" ? Mode::kIdle : Mode::kTransposed;
    if (mode_ == Mode::kTransposed) transposed_ = Registry<Macro>::Create(p.At("inner"));
  }

  const MacroSpec& spec() const override { return inner_->spec(); }
  CounterSet Counters() const override {
    CounterSet inner = inner_->Counters();
    return CounterSet::Union("macro/double_buffered", {&inner, &DoubleBufferedCounters()});
  }
  void SetRowSegment(int64_t rows_per_segment) override {
    inner_->SetRowSegment(rows_per_segment);
  }

  // shadow: writes into the idle buffer, then switches. The inner macro's `weight_writes`
  // become `shadow_weight_writes` (hidden behind the other buffer's computation) and one
  // `buffer_switches` per programmed weight matrix is counted. transposed_copy: W into one
  // buffer and W^T into the other (a second programming of the inner macro, as its own
  // forward-read matrix), every write in time. idle: the inner macro's writes, in time.
  void Program(ConstMatrixView w, const RunContext& ctx, ActionCounts& counts) override {
    if (mode_ == Mode::kIdle) {
      inner_->Program(w, ctx, counts);
      return;
    }
    if (mode_ == Mode::kTransposed) {
      inner_->Program(w, ctx, counts);
      wt_.resize(static_cast<size_t>(w.rows * w.cols));
      for (int64_t r = 0; r < w.rows; ++r) {
        for (int64_t c = 0; c < w.cols; ++c) wt_[c * w.rows + r] = w.Row(r)[c];
      }
      ActionCounts t;
      transposed_->Program(ConstMatrixView(wt_.data(), w.cols, w.rows, w.rows), ctx, t);
      for (const auto& [name, n] : t.counts()) {
        // W^T lives in the second buffer of the same arrays: no occupancy of its own.
        if (name != "array_cells_allocated" && name != "array_cells_used") counts.Add(name, n);
      }
      return;
    }
    ActionCounts c;
    inner_->Program(w, ctx, c);
    for (const auto& [name, n] : c.counts()) {
      counts.Add(name == "weight_writes" ? "shadow_weight_writes" : name, n);
    }
    counts.Add("buffer_switches", 1);
  }

  void Multiply(ConstMatrixView x, MatrixView y, Direction dir, const RunContext& ctx,
                ActionCounts& counts) override {
    if (mode_ == Mode::kTransposed && dir == Direction::kTransposed) {
      transposed_->Multiply(x, y, Direction::kForward, ctx, counts);  // a row read of W^T
      return;
    }
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
  enum class Mode { kShadow, kTransposed, kIdle };
  std::unique_ptr<Macro> inner_;
  std::unique_ptr<Macro> transposed_;  // transposed_copy: the second buffer, holding W^T
  std::vector<float> wt_;
  Mode mode_ = Mode::kShadow;
};

PIM_REGISTER(Macro, DoubleBufferedMacro, "double_buffered",
             "any macro with two weight buffers: write-back overlaps computation (SP-PIM)");

}  // namespace
}  // namespace pim
