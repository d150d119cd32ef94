// digital_bitserial: T-PIM's digital 8T-SRAM macro (Heo et al., CICC 2022 / JSSC 58(3) 2023):
// 1-bit AND cells, exact adder trees and shift-add, bit-serial inputs, power-of-two scales.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/base/scratch.h"
#include "pimtrain/kernels/bitserial.h"
#include "pimtrain/kernels/bitserial_quantize.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/numerics/fixed_point.h"

namespace pim {
namespace {

PIM_DECLARE_COUNTERS(
    DigitalBitSerialCounters, "macro/digital_bitserial",
    {"weight_writes", "cell write", "WU", "cells written when the weights are programmed"},
    {"array_cells_allocated", "cell", "WU", "cells of the arrays the layout occupies (occupancy)"},
    {"array_cells_used", "cell", "WU", "cells holding weight bits (occupancy)"},
    {"gc_operand_writes", "cell write", "GC", "error bits written into the GC array (dY)"});

enum class KernelChoice { kFast, kRef };
// How the forward direction reads the top `weight_bits` of the stored `weight_bits_backward`:
// kTruncate drives only the top bit columns (floor); kNearest adds half an LSB first.
enum class WeightRead { kTruncate, kNearest };

// Stream ids for stochastic rounding (one per tensor a call quantizes).
constexpr uint64_t kStreamInput = 1;
constexpr uint64_t kStreamGradX = 2;
constexpr uint64_t kStreamGradDy = 3;
constexpr uint64_t kStreamProgram = 4;

bool IsPowerOfTwoWidth(int64_t b) { return b == 1 || b == 2 || b == 4 || b == 8 || b == 16; }

// Reads a weight width and checks it is one of T-PIM's configurable widths {1, 2, 4, 8, 16}.
int WeightWidth(const ConfigNode& p, const char* key) {
  const ConfigNode& n = p.At(key);
  const int64_t b = n.AsInt();
  if (!IsPowerOfTwoWidth(b)) {
    throw ConfigError(n.Where() + ": " + n.text() + " is not one of {1, 2, 4, 8, 16} (T-PIM's " +
                      "configurable arithmetic units combine power-of-two bit columns)");
  }
  return static_cast<int>(b);
}

// The quantizer of v for `bits`-wide integers: its scale from v's own max |v| (max(v, 0) when
// unsigned) over the finite elements, or from `max_abs` when that is a finite value >= 0 (the
// MaxForScale of the whole tensor v is a slice of: RunContext::input_max_abs), so that slicing
// a batch does not change the scale.
kernels::PowerOfTwoQuantizer QuantizerOf(ConstMatrixView v, int bits, Signedness sign,
                                         float max_abs, bool ref) {
  if (!(max_abs >= 0 && max_abs < std::numeric_limits<float>::infinity())) {
    max_abs = ref ? kernels::ref::MaxForScale(v, sign) : kernels::fast::MaxForScale(v, sign);
  }
  return kernels::QuantizerFor(max_abs, bits, sign);
}

// Rows of a weight matrix per parallel chunk of Program and ReadWeights: ~16K elements.
int64_t RowGrain(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols)); }

class DigitalBitSerialMacro final : public Macro {
 public:
  explicit DigitalBitSerialMacro(const ConfigNode& p) {
    spec_.rows = p.GetInt("rows");
    spec_.cols = p.GetInt("cols");
    spec_.arrays_per_core = p.GetInt("arrays_per_core");
    spec_.cores = p.GetInt("cores");
    spec_.input_bits = static_cast<int>(p.GetInt("input_bits"));
    spec_.weight_bits = WeightWidth(p, "weight_bits");
    spec_.weight_bits_backward = WeightWidth(p, "weight_bits_backward");
    gradient_bits_ = WeightWidth(p, "gradient_bits");
    spec_.gradient_bits = gradient_bits_;
    const int64_t eb = p.GetInt("error_bits");
    error_bits_ = eb == 0 ? spec_.input_bits : static_cast<int>(eb);
    spec_.error_bits = error_bits_;
    if (spec_.weight_bits > spec_.weight_bits_backward) {
      const ConfigNode& n = p.At("weight_bits");
      throw ConfigError(n.Where() + ": " + n.text() + " exceeds weight_bits_backward (" +
                        std::to_string(spec_.weight_bits_backward) +
                        "): the forward direction reads the top bits of the stored weights");
    }
    sign_ = p.GetBool("signed") ? Signedness::kSigned : Signedness::kUnsigned;
    input_rounding_ =
        p.GetString("rounding") == "stochastic" ? Rounding::kStochastic : Rounding::kNearestEven;
    weight_rounding_ = p.GetString("weight_rounding") == "stochastic" ? Rounding::kStochastic
                                                                      : Rounding::kNearestEven;
    weight_read_ = p.GetString("forward_weight_read") == "nearest" ? WeightRead::kNearest
                                                                   : WeightRead::kTruncate;
    spec_.master_weights = p.GetBool("master_weights");
    kernel_ = p.GetString("kernel") == "ref" ? KernelChoice::kRef : KernelChoice::kFast;
  }

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("rows")
              .Default(256)
              .Range(1, 1 << 20)
              .Doc("word lines per array: the reduction extent of one adder tree [assume]"));
    s.Add(Param::Int("cols")
              .Default(256)
              .Range(1, 1 << 20)
              .Doc("weight columns per array (each weight_bits_backward bit lines wide) [assume]"));
    s.Add(Param::Int("arrays_per_core")
              .Default(1)
              .Range(1, 1 << 16)
              .Doc("arrays working in parallel in one core"));
    s.Add(Param::Int("cores").Default(1).Range(1, 1 << 16).Doc("cores (T-PIM has 5)"));
    s.Add(Param::Int("input_bits")
              .Default(8)
              .Range(1, 16)
              .Unit("bit")
              .Doc("bit-serial width of forward inputs (activations) and of X on the GC path"));
    s.Add(Param::Int("error_bits")
              .Default(0)
              .Range(0, 16)
              .Unit("bit")
              .Doc("bit-serial width of transposed-direction inputs (errors); 0 = input_bits"));
    s.Add(Param::Int("weight_bits")
              .Default(8)
              .Range(1, 16)
              .Unit("bit")
              .Doc("forward weight width, one of {1, 2, 4, 8, 16}: the top bits of the "
                   "stored weights"));
    s.Add(Param::Int("weight_bits_backward")
              .Default(16)
              .Range(1, 16)
              .Unit("bit")
              .Doc("stored weight width, read whole in the transposed direction; one of "
                   "{1, 2, 4, 8, 16}"));
    s.Add(Param::Int("gradient_bits")
              .Default(16)
              .Range(1, 16)
              .Unit("bit")
              .Doc("width of dY stored in the GC array, one of {1, 2, 4, 8, 16} [assume]"));
    s.Add(Param::Bool("signed").Default(true).Doc(
        "two's-complement operands (MSB plane weighs -2^(b-1)); false: unsigned, negatives clip "
        "to 0"));
    s.Add(Param::Enum("rounding", {"nearest", "stochastic"})
              .Default("nearest")
              .Doc("rounding of inputs, errors and GC operands to integers"));
    s.Add(Param::Enum("weight_rounding", {"nearest", "stochastic"})
              .Default("nearest")
              .Doc("rounding of weights when programmed (stochastic keyed by the run context: "
                   "seed, layer, step, stage)"));
    s.Add(Param::Bool("master_weights")
              .Default(true)
              .Doc("keep FP32 master weights outside the array (false: the array is the only "
                   "copy, updates are written into it, as T-PIM's on-chip WU does)"));
    s.Add(Param::Enum("forward_weight_read", {"truncate", "nearest"})
              .Default("truncate")
              .Doc("how the forward direction reads the top weight_bits of the stored weights: "
                   "truncate (only the top bit columns are driven: floor) or nearest (half an "
                   "LSB added)"));
    s.Add(Param::Enum("kernel", {"fast", "ref"})
              .Default("fast")
              .Doc("fast: exact integer GEMM with counts from statistics; ref: the "
                   "cycle-by-cycle loops (identical results, slow)"));
    return s;
  }

  const MacroSpec& spec() const override { return spec_; }
  CounterSet Counters() const override {
    return CounterSet::Union("macro/digital_bitserial", {&kernels::BitSerialKernelCounters(),
                                                         &DigitalBitSerialCounters()});
  }

  void SetRowSegment(int64_t rows_per_segment) override {
    PIM_CHECK_MSG(rows_per_segment >= 0, "SetRowSegment: negative segment");
    next_row_segment_ = rows_per_segment;
  }

  void Program(ConstMatrixView w, const RunContext& ctx, ActionCounts& counts) override {
    rows_ = w.rows;
    cols_ = w.cols;
    row_segment_ = next_row_segment_;
    const int bs = spec_.weight_bits_backward, bf = spec_.weight_bits;
    const CounterRng rng = Rng(ctx, kStreamProgram);
    const size_t size = static_cast<size_t>(rows_ * cols_);
    // Forward weights: the top bf of the bs stored bits, w_f = floor(w_s / 2^(bs - bf)) (an
    // arithmetic shift: the low bit columns are simply not driven), or with kNearest
    // floor((w_s + 2^(bs-bf-1)) / 2^(bs-bf)) clipped to the bf-bit range. Scale 2^(exp + bs - bf).
    // Truncation is the kernel's shifted read of the stored words; only kNearest keeps a copy.
    const int shift = bs - bf;
    const bool nearest_read = shift > 0 && weight_read_ == WeightRead::kNearest;
    const int32_t fmax = static_cast<int32_t>(IntMax(bf, sign_));
    const int32_t half = nearest_read ? int32_t{1} << (shift - 1) : 0;
    const kernels::ForwardRead fr{shift, half, fmax};
    forward_shift_ = nearest_read ? 0 : shift;
    stored_.resize(size);
    forward_.resize(nearest_read ? size : 0);
    transposed_valid_ = false;  // built by the first transposed read (TransposedWeights)
    // One pass writes the stored weights (and the rounded forward weights). The transposed read
    // sees the same bits through a cols x rows copy (contiguous reads for the kernel), made when
    // a transposed read first needs it: a layer whose input error nobody reads (the first
    // layer) never does, and its copy would be a third of this pass's memory traffic.
    // Elementwise work (and a maximum) over independent rows: split over the pool's threads.
    ThreadPool& pool = ctx.pool != nullptr ? *ctx.pool : DefaultPool();
    const bool ref = kernel_ == KernelChoice::kRef;
    auto max_for_scale = [&](ConstMatrixView v) {
      return ref ? kernels::ref::MaxForScale(v, sign_) : kernels::fast::MaxForScale(v, sign_);
    };
    std::mutex max_mu;
    // Round to nearest with quantizer qz (float_ok), row by row (kernels::fast::
    // QuantizeWordsRow). With `max_out`, the same pass also takes the maximum that sets the
    // scale, each row's just before it is quantized (the row is then read from L1): one pass
    // over the weights instead of two.
    auto quantize_rows = [&](const kernels::PowerOfTwoQuantizer& qz, float* max_out) {
      pool.ParallelFor(rows_, RowGrain(cols_), [&](int64_t r0, int64_t r1) {
        float chunk_max = 0.0f;
        for (int64_t r = r0; r < r1; ++r) {
          const ConstMatrixView row(w.Row(r), 1, cols_, w.ld);
          if (max_out != nullptr) chunk_max = std::max(chunk_max, max_for_scale(row));
          int16_t* st = stored_.data() + r * cols_;
          int16_t* fw = nearest_read ? forward_.data() + r * cols_ : nullptr;
          if (ref) {
            kernels::ref::QuantizeWords(row, qz, sign_, fr, st, fw);
          } else {
            kernels::fast::QuantizeWordsRow(row.data, cols_, qz, sign_, fr, st, fw);
          }
        }
        if (max_out != nullptr) {
          std::lock_guard<std::mutex> lock(max_mu);
          *max_out = std::max(*max_out, chunk_max);  // a maximum: the same in any order
        }
      });
    };
    // The scale rarely changes from one update to the next: quantize with the last one while
    // taking the maximum, and keep the result if the maximum gives that same scale (then it is
    // exactly what quantizing afterwards would give); otherwise quantize again.
    bool vectorized = false, done = false;
    if (weight_rounding_ == Rounding::kNearestEven && has_last_exp_) {
      const kernels::PowerOfTwoQuantizer guess = kernels::QuantizerForExp(last_weight_exp_, bs,
                                                                          sign_);
      if (guess.float_ok) {
        float max_abs = 0.0f;
        quantize_rows(guess, &max_abs);
        done = vectorized = PowerOfTwoExponent(max_abs, bs, sign_) == guess.exp;
      }
    }
    if (!done) {
      float max_abs = 0.0f;
      pool.ParallelFor(rows_, RowGrain(cols_), [&](int64_t r0, int64_t r1) {
        const float m = max_for_scale(ConstMatrixView(w.Row(r0), r1 - r0, cols_, w.ld));
        std::lock_guard<std::mutex> lock(max_mu);
        max_abs = std::max(max_abs, m);  // a maximum: the same in any order
      });
      const kernels::PowerOfTwoQuantizer qz = kernels::QuantizerFor(max_abs, bs, sign_);
      if (weight_rounding_ == Rounding::kNearestEven && qz.float_ok) {
        quantize_rows(qz, nullptr);
        vectorized = true;
      } else {
        int32_t* q = wq_.Get(rows_ * cols_);
        if (ref) {
          kernels::ref::Quantize(w, qz, weight_rounding_, rng, q, false);
        } else {
          kernels::fast::Quantize(w, qz, weight_rounding_, rng, q, false);
        }
        for (size_t i = 0; i < size; ++i) stored_[i] = static_cast<int16_t>(q[i]);
      }
      last_weight_exp_ = qz.exp;
      has_last_exp_ = true;
    }
    weight_exp_ = last_weight_exp_;
    forward_exp_ = weight_exp_ + shift;
    if (nearest_read && !vectorized) {  // the row pass wrote forward_ itself
      for (size_t i = 0; i < size; ++i) {
        forward_[i] = static_cast<int16_t>(std::min((StoredAt(static_cast<int64_t>(i)) + half) >>
                                                        shift, fmax));
      }
    }
    counts.Add("weight_writes", rows_ * cols_ * bs);  // every cell of every stored weight
    // Occupancy: the layout takes row tiles (cut within row segments) x column tiles arrays of
    // rows x cols weights, each bs cells wide; the stored weights fill rows_ x cols_ of them.
    const int64_t arrays = kernels::NumBlocks(rows_, spec_.rows, row_segment_) *
                           kernels::NumBlocks(cols_, spec_.cols, 0);
    counts.Add("array_cells_allocated", arrays * spec_.rows * spec_.cols * bs);
    counts.Add("array_cells_used", rows_ * cols_ * bs);
  }

  // The structure the cost model prices (bitserial_sram, docs/cost.md).
  std::map<std::string, double> HardwareParams() const override {
    return {{"rows", static_cast<double>(spec_.rows)},
            {"cols", static_cast<double>(spec_.cols)},
            {"bitlines", static_cast<double>(spec_.cols * spec_.weight_bits_backward)},
            {"arrays_total", static_cast<double>(spec_.arrays_per_core * spec_.cores)},
            {"input_bits", static_cast<double>(spec_.input_bits)},
            {"error_bits", static_cast<double>(error_bits_)},
            {"weight_bits", static_cast<double>(spec_.weight_bits)},
            {"weight_bits_backward", static_cast<double>(spec_.weight_bits_backward)},
            {"gradient_bits", static_cast<double>(gradient_bits_)}};
  }

  void Multiply(ConstMatrixView x, MatrixView y, Direction dir, const RunContext& ctx,
                ActionCounts& counts) override {
    const bool fwd = dir == Direction::kForward;
    const int64_t k = fwd ? rows_ : cols_, n = fwd ? cols_ : rows_;
    PIM_CHECK_MSG(x.cols == k && y.cols == n && x.rows == y.rows,
                  "Multiply: operand shapes do not match the programmed weights");
    const int bits = fwd ? spec_.input_bits : error_bits_;
    int32_t* xq = xq_.Get(x.rows * x.cols);
    // The tensor's max |x| is its MaxForScale only for signed inputs.
    const int ex = Quantize(x, bits, sign_, input_rounding_, Rng(ctx, kStreamInput), xq, false,
                            sign_ == Signedness::kSigned ? ctx.input_max_abs : -1.0f);
    kernels::BitSerialProblem p;
    p.m = x.rows;
    p.k = k;
    p.n = n;
    p.x = {xq, k, 1, bits, sign_};
    if (fwd) {
      p.w = {nullptr, cols_, 1, spec_.weight_bits, sign_};
      p.w.data16 = forward_.empty() ? stored_.data() : forward_.data();
      p.w.shift = forward_shift_;
      p.tile_k = spec_.rows;  // reduction over word lines
      p.tile_n = spec_.cols;
      p.segment_k = row_segment_;  // each segment's rows start on fresh arrays
    } else {
      // T-PIM's transposed path: the same cells read column-wise; the reduction runs over the
      // array's columns and the outputs are its rows, at the full stored width.
      p.w = {nullptr, rows_, 1, spec_.weight_bits_backward, sign_};
      p.w.data16 = TransposedWeights();
      p.tile_k = spec_.cols;
      p.tile_n = spec_.rows;
      // The stored rows are this read's outputs: segments only cut the output blocks (more
      // arrays see each input plane); the reduction over the columns is tiled as before.
      p.segment_n = row_segment_;
    }
    p.y = yq_.Get(p.m * n);
    p.ldy = n;
    Run(p, ex + (fwd ? forward_exp_ : weight_exp_), y, ctx, counts);
  }

  // GC path [assume]: dY (batch x cols) is written into a GC array at gradient_bits per element,
  // the batch on its word lines; each column of X (one input feature over the batch) is streamed
  // bit-serially at input_bits. dW[r][c] = sum_b x[b][r] dy[b][c]: the reduction runs over the
  // batch, outputs are dW's rows (one per streamed vector) times its columns.
  void GradientCalc(ConstMatrixView x, ConstMatrixView dy, MatrixView dw, const RunContext& ctx,
                    ActionCounts& counts) override {
    PIM_CHECK_MSG(x.rows == dy.rows && dw.rows == x.cols && dw.cols == dy.cols,
                  "GradientCalc: operand shapes do not match");
    const int64_t batch = x.rows;
    int32_t* xq = xq_.Get(x.rows * x.cols);
    int32_t* dyq = dyq_.Get(dy.rows * dy.cols);
    // x may be a block of the columns of a whole x (a GC split over processes): scaled as the
    // whole tensor is (input_max_abs), as Multiply scales slices of a batch.
    const int ex = Quantize(x, spec_.input_bits, sign_, input_rounding_, Rng(ctx, kStreamGradX),
                            xq, /*transpose=*/true,
                            sign_ == Signedness::kSigned ? ctx.input_max_abs : -1.0f);
    const int edy =
        Quantize(dy, gradient_bits_, sign_, input_rounding_, Rng(ctx, kStreamGradDy), dyq,
                 /*transpose=*/false, sign_ == Signedness::kSigned ? ctx.gradient_max_abs : -1.0f);
    kernels::BitSerialProblem p;
    p.m = x.cols;
    p.k = batch;
    p.n = dy.cols;
    p.x = {xq, batch, 1, spec_.input_bits, sign_};
    p.w = {dyq, dy.cols, 1, gradient_bits_, sign_};
    p.tile_k = spec_.rows;
    p.tile_n = spec_.cols;
    p.y = yq_.Get(p.m * p.n);
    p.ldy = p.n;
    if (ctx.count_shared_actions) {
      counts.Add("gc_operand_writes", batch * dy.cols * gradient_bits_);  // dY into the GC array
    }
    Run(p, ex + edy, dw, ctx, counts);
  }

  void ReadWeights(MatrixView w) const override {
    PIM_CHECK_MSG(w.rows == rows_ && w.cols == cols_, "ReadWeights: shape mismatch");
    // Independent rows, split over the process-wide pool (the interface passes no context).
    DefaultPool().ParallelFor(rows_, RowGrain(cols_), [&](int64_t r0, int64_t r1) {
      const MatrixView rows(w.Row(r0), r1 - r0, cols_, w.ld);
      const int16_t* src = stored_.data() + r0 * cols_;
      if (kernel_ == KernelChoice::kRef) {
        kernels::ref::DequantizeWords(src, sign_, weight_exp_, rows);
      } else {
        kernels::fast::DequantizeWords(src, sign_, weight_exp_, rows);
      }
    });
  }

 private:
  static CounterRng Rng(const RunContext& ctx, uint64_t stream) {
    return CounterRng(MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                             static_cast<uint64_t>(ctx.step), static_cast<uint64_t>(ctx.stage)),
                      stream);
  }

  // A stored word as the integer it holds (int16 when signed, uint16 when unsigned).
  int32_t StoredAt(int64_t i) const {
    return sign_ == Signedness::kSigned ? int32_t{stored_[i]}
                                        : int32_t{static_cast<uint16_t>(stored_[i])};
  }

  // stored_ transposed (cols x rows), made once per Program.
  const int16_t* TransposedWeights() {
    if (transposed_valid_) return stored_t_.data();
    stored_t_.resize(stored_.size());
    if (kernel_ == KernelChoice::kRef) {
      kernels::ref::TransposeWords(stored_.data(), rows_, cols_, stored_t_.data());
    } else {
      kernels::fast::TransposeWords(stored_.data(), rows_, cols_, stored_t_.data());
    }
    transposed_valid_ = true;
    return stored_t_.data();
  }

  // Quantizes v into q (see kernels::PowerOfTwoQuantizer) and returns the exponent; with
  // `transpose`, q is written cols x rows; max_abs: see QuantizerOf.
  int Quantize(ConstMatrixView v, int bits, Signedness sign, Rounding rounding,
               const CounterRng& rng, int32_t* q, bool transpose = false,
               float max_abs = -1.0f) const {
    const bool ref = kernel_ == KernelChoice::kRef;
    const kernels::PowerOfTwoQuantizer qz = QuantizerOf(v, bits, sign, max_abs, ref);
    if (ref) {
      kernels::ref::Quantize(v, qz, rounding, rng, q, transpose);
    } else {
      kernels::fast::Quantize(v, qz, rounding, rng, q, transpose);
    }
    return qz.exp;
  }

  // The exact product, dequantized into y: y = p.y * 2^exp (the fast kernel scales each
  // element as it finishes it, with the same arithmetic as ref::Dequantize).
  void Run(const kernels::BitSerialProblem& p, int exp, MatrixView y, const RunContext& ctx,
           ActionCounts& counts) const {
    kernels::BitSerialCounts c;
    if (kernel_ == KernelChoice::kRef) {
      kernels::ref::BitSerialMatMul(p, c);
      kernels::ref::Dequantize(p.y, exp, y);
    } else {
      kernels::fast::BitSerialMatMulScaled(p, exp, y.data, y.ld, c,
                                           ctx.pool != nullptr ? ctx.pool : &DefaultPool());
    }
    c.AddTo(counts);
  }

  MacroSpec spec_;
  int error_bits_ = 8;
  int gradient_bits_ = 16;
  Signedness sign_ = Signedness::kSigned;
  Rounding input_rounding_ = Rounding::kNearestEven;
  Rounding weight_rounding_ = Rounding::kNearestEven;
  WeightRead weight_read_ = WeightRead::kTruncate;
  KernelChoice kernel_ = KernelChoice::kFast;

  int64_t rows_ = 0, cols_ = 0;
  int64_t next_row_segment_ = 0;   // set by SetRowSegment, takes effect at Program
  int64_t row_segment_ = 0;        // the programmed layout's row segment (0: dense)
  int weight_exp_ = 0;             // stored weight = stored_ * 2^weight_exp_
  int forward_exp_ = 0;            // forward weight = forward_ * 2^forward_exp_
  // The scale exponent of the last Program (a guess for the next one; see Program).
  int last_weight_exp_ = 0;
  bool has_last_exp_ = false;
  // The stored words (at most 16 bits: int16 when signed, uint16 when unsigned), half the memory
  // traffic of int32 in Program, ReadWeights and the kernel's packing.
  std::vector<int16_t> stored_;    // rows x cols at weight_bits_backward
  std::vector<int16_t> stored_t_;  // the same, cols x rows (valid when transposed_valid_)
  bool transposed_valid_ = false;
  // The forward read: stored_ >> forward_shift_ (truncation), or, with forward_weight_read
  // nearest, the rounded top bits in forward_ (forward_shift_ 0).
  std::vector<int16_t> forward_;
  int forward_shift_ = 0;
  // Per-call scratch (quantized operands, integer results), kept to avoid reallocation.
  Scratch<int32_t> xq_, dyq_, wq_;
  Scratch<int64_t> yq_;
};

PIM_REGISTER(Macro, DigitalBitSerialMacro, "digital_bitserial",
             "T-PIM digital 8T-SRAM macro: bit-serial inputs, 1-bit AND cells, exact adder trees");

}  // namespace
}  // namespace pim
