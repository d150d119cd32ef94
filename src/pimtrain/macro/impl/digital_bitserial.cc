// digital_bitserial: T-PIM's digital 8T-SRAM macro (Heo et al., CICC 2022 / JSSC 58(3) 2023):
// 1-bit AND cells, exact adder trees and shift-add, bit-serial inputs, power-of-two scales.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/bitserial.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/numerics/fixed_point.h"

namespace pim {
namespace {

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

// Quantizes v (rows x cols) into q to `bits`-wide integers with one power-of-two scale for the
// whole tensor and returns the exponent: exp = PowerOfTwoExponent(max |v|) (max(v, 0) when
// unsigned), q = round(v / 2^exp) clipped. Non-finite values: NaN -> 0, +-inf clip; they do not
// set the scale. Stochastic rounding draws element i (row-major logical index) from `rng`. With
// `transpose`, q is written cols x rows.
int Quantize(ConstMatrixView v, int bits, Signedness sign, Rounding rounding, const CounterRng& rng,
             std::vector<int32_t>& q, bool transpose = false) {
  // max |v| (or max v when unsigned) over the finite elements: NaN and inf fail `a < inf`.
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 vmax = _mm256_setzero_ps();
  float max_abs = 0;
  for (int64_t r = 0; r < v.rows; ++r) {
    const float* row = v.Row(r);
    int64_t c = 0;
    for (; c + 8 <= v.cols; c += 8) {
      __m256 a = _mm256_loadu_ps(row + c);
      if (sign == Signedness::kSigned) a = _mm256_and_ps(a, abs_mask);
      a = _mm256_and_ps(a, _mm256_cmp_ps(a, inf, _CMP_LT_OQ));
      vmax = _mm256_max_ps(vmax, a);
    }
    for (; c < v.cols; ++c) {
      const float a = sign == Signedness::kSigned ? std::fabs(row[c]) : row[c];
      max_abs = a < std::numeric_limits<float>::infinity() && a > max_abs ? a : max_abs;
    }
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  for (float l : lanes) max_abs = std::max(max_abs, l);
  const int exp = PowerOfTwoExponent(max_abs, bits, sign);
  const double inv_scale = std::ldexp(1.0, -exp);  // exact: a power of two
  const double lo = static_cast<double>(IntMin(bits, sign));
  const double hi = static_cast<double>(IntMax(bits, sign));
  // 2^-exp must be a normal float for the float path (it is unless max |v| is near the float
  // range's ends).
  const bool float_scale_ok = -exp >= -126 && -exp <= 127;
  q.resize(static_cast<size_t>(v.rows * v.cols));
  for (int64_t r = 0; r < v.rows; ++r) {
    const float* row = v.Row(r);
    if (rounding == Rounding::kNearestEven && !transpose) {
      int32_t* out = q.data() + r * v.cols;
      int64_t c = 0;
      if (float_scale_ok) {
        // The same arithmetic in float, 8 at a time: row[c] * 2^-exp is exact (a power-of-two
        // scale, and the result is far from overflow), vroundps rounds half to even, NaN -> 0.
        const __m256 vscale = _mm256_set1_ps(static_cast<float>(inv_scale));
        const __m256 vlo = _mm256_set1_ps(static_cast<float>(lo));
        const __m256 vhi = _mm256_set1_ps(static_cast<float>(hi));
        for (; c + 8 <= v.cols; c += 8) {
          __m256 t = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(row + c), vscale),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          const __m256 is_num = _mm256_cmp_ps(t, t, _CMP_ORD_Q);
          t = _mm256_and_ps(_mm256_min_ps(_mm256_max_ps(t, vlo), vhi), is_num);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), _mm256_cvtps_epi32(t));
        }
      }
      for (; c < v.cols; ++c) {
        // s is exact; nearbyint rounds half to even (the default rounding mode).
        double t = std::nearbyint(static_cast<double>(row[c]) * inv_scale);
        t = t != t ? 0.0 : std::min(std::max(t, lo), hi);
        out[c] = static_cast<int32_t>(t);
      }
      continue;
    }
    for (int64_t c = 0; c < v.cols; ++c) {
      const double s = static_cast<double>(row[c]) * inv_scale;  // exact
      double t;
      if (rounding == Rounding::kStochastic) {
        const uint64_t i = static_cast<uint64_t>(r * v.cols + c);
        const float u = CounterRng::ToUnitFloat(rng.Block(i >> 2)[i & 3]);
        t = std::floor(s + static_cast<double>(u));  // E[t] = s
      } else {
        t = std::nearbyint(s);
      }
      t = t != t ? 0.0 : std::min(std::max(t, lo), hi);
      const int64_t idx = transpose ? c * v.rows + r : r * v.cols + c;
      q[static_cast<size_t>(idx)] = static_cast<int32_t>(t);
    }
  }
  return exp;
}

// y = q * 2^exp in float: q -> double is exact (|q| < 2^53), the power-of-two scale is exact,
// and the conversion to float rounds once, to nearest even.
void Dequantize(const std::vector<int64_t>& q, int exp, MatrixView y) {
  const double scale = std::ldexp(1.0, exp);
  for (int64_t r = 0; r < y.rows; ++r) {
    float* row = y.Row(r);
    const int64_t* src = q.data() + r * y.cols;
    for (int64_t c = 0; c < y.cols; ++c) {
      row[c] = static_cast<float>(static_cast<double>(src[c]) * scale);
    }
  }
}

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
              .Doc("rounding of weights when programmed (stochastic keyed by program_seed and "
                   "the count of Program calls)"));
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
    weight_exp_ = Quantize(w, bs, sign_, weight_rounding_, rng, stored_);
    // The transposed read sees the same bits; a cols x rows copy only makes the kernel's reads
    // contiguous.
    stored_t_.resize(stored_.size());
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t c = 0; c < cols_; ++c) stored_t_[c * rows_ + r] = stored_[r * cols_ + c];
    }
    // Forward weights: the top bf of the bs stored bits, w_f = floor(w_s / 2^(bs - bf)) (an
    // arithmetic shift: the low bit columns are simply not driven), or with kNearest
    // floor((w_s + 2^(bs-bf-1)) / 2^(bs-bf)) clipped to the bf-bit range. Scale 2^(exp + bs - bf).
    const int shift = bs - bf;
    forward_exp_ = weight_exp_ + shift;
    forward_.resize(stored_.size());
    const int32_t fmax = static_cast<int32_t>(IntMax(bf, sign_));
    for (size_t i = 0; i < stored_.size(); ++i) {
      int32_t v = stored_[i];
      if (shift > 0 && weight_read_ == WeightRead::kNearest) {
        v = std::min((v + (int32_t{1} << (shift - 1))) >> shift, fmax);
      } else {
        v >>= shift;
      }
      forward_[i] = v;
    }
    counts.Add("weight_writes", rows_ * cols_ * bs);  // every cell of every stored weight
    // Occupancy: the layout takes row tiles (cut within row segments) x column tiles arrays of
    // rows x cols weights, each bs cells wide; the stored weights fill rows_ x cols_ of them.
    const int64_t arrays = kernels::NumBlocks(rows_, spec_.rows, row_segment_) *
                           kernels::NumBlocks(cols_, spec_.cols, 0);
    counts.Add("array_cells_allocated", arrays * spec_.rows * spec_.cols * bs);
    counts.Add("array_cells_used", rows_ * cols_ * bs);
  }

  void Multiply(ConstMatrixView x, MatrixView y, Direction dir, const RunContext& ctx,
                ActionCounts& counts) override {
    const bool fwd = dir == Direction::kForward;
    const int64_t k = fwd ? rows_ : cols_, n = fwd ? cols_ : rows_;
    PIM_CHECK_MSG(x.cols == k && y.cols == n && x.rows == y.rows,
                  "Multiply: operand shapes do not match the programmed weights");
    const int bits = fwd ? spec_.input_bits : error_bits_;
    const int ex = Quantize(x, bits, sign_, input_rounding_, Rng(ctx, kStreamInput), xq_);
    kernels::BitSerialProblem p;
    p.m = x.rows;
    p.k = k;
    p.n = n;
    p.x = {xq_.data(), k, 1, bits, sign_};
    if (fwd) {
      p.w = {forward_.data(), cols_, 1, spec_.weight_bits, sign_};
      p.tile_k = spec_.rows;  // reduction over word lines
      p.tile_n = spec_.cols;
      p.segment_k = row_segment_;  // each segment's rows start on fresh arrays
    } else {
      // T-PIM's transposed path: the same cells read column-wise; the reduction runs over the
      // array's columns and the outputs are its rows, at the full stored width.
      p.w = {stored_t_.data(), rows_, 1, spec_.weight_bits_backward, sign_};
      p.tile_k = spec_.cols;
      p.tile_n = spec_.rows;
      // The stored rows are this read's outputs: segments only cut the output blocks (more
      // arrays see each input plane); the reduction over the columns is tiled as before.
      p.segment_n = row_segment_;
    }
    yq_.resize(static_cast<size_t>(p.m * n));
    p.y = yq_.data();
    p.ldy = n;
    Run(p, ctx, counts);
    Dequantize(yq_, ex + (fwd ? forward_exp_ : weight_exp_), y);
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
    const int ex = Quantize(x, spec_.input_bits, sign_, input_rounding_, Rng(ctx, kStreamGradX),
                            xq_, /*transpose=*/true);
    const int edy =
        Quantize(dy, gradient_bits_, sign_, input_rounding_, Rng(ctx, kStreamGradDy), dyq_);
    kernels::BitSerialProblem p;
    p.m = x.cols;
    p.k = batch;
    p.n = dy.cols;
    p.x = {xq_.data(), batch, 1, spec_.input_bits, sign_};
    p.w = {dyq_.data(), dy.cols, 1, gradient_bits_, sign_};
    p.tile_k = spec_.rows;
    p.tile_n = spec_.cols;
    yq_.resize(static_cast<size_t>(p.m * p.n));
    p.y = yq_.data();
    p.ldy = p.n;
    counts.Add("gc_operand_writes", batch * dy.cols * gradient_bits_);  // dY into the GC array
    Run(p, ctx, counts);
    Dequantize(yq_, ex + edy, dw);
  }

  void ReadWeights(MatrixView w) const override {
    PIM_CHECK_MSG(w.rows == rows_ && w.cols == cols_, "ReadWeights: shape mismatch");
    const double scale = std::ldexp(1.0, weight_exp_);
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t c = 0; c < cols_; ++c) {
        w.Row(r)[c] = static_cast<float>(stored_[r * cols_ + c] * scale);
      }
    }
  }

 private:
  static CounterRng Rng(const RunContext& ctx, uint64_t stream) {
    return CounterRng(MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                             static_cast<uint64_t>(ctx.step), static_cast<uint64_t>(ctx.stage)),
                      stream);
  }

  void Run(const kernels::BitSerialProblem& p, const RunContext& ctx, ActionCounts& counts) const {
    kernels::BitSerialCounts c;
    if (kernel_ == KernelChoice::kRef) {
      kernels::ref::BitSerialMatMul(p, c);
    } else {
      kernels::fast::BitSerialMatMul(p, c, ctx.pool != nullptr ? ctx.pool : &DefaultPool());
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
  std::vector<int32_t> stored_;    // rows x cols at weight_bits_backward
  std::vector<int32_t> stored_t_;  // the same, cols x rows
  std::vector<int32_t> forward_;   // rows x cols, top weight_bits of stored_
  // Per-call scratch (quantized operands, integer results), kept to avoid reallocation.
  std::vector<int32_t> xq_, dyq_;
  std::vector<int64_t> yq_;
};

PIM_REGISTER(Macro, DigitalBitSerialMacro, "digital_bitserial",
             "T-PIM digital 8T-SRAM macro: bit-serial inputs, 1-bit AND cells, exact adder trees");

}  // namespace
}  // namespace pim
