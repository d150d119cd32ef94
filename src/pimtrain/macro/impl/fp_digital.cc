// fp_digital: the floating-point digital SRAM CIM macro of ISSCC 2025 14.5 (Yuan et al.,
// IME-CAS, "A 28nm 192.3TFLOPS/W Accurate/Approximate Dual-Mode-Transpose Digital 6T-SRAM CIM
// Macro for Floating-Point Edge Training and Inference"). Inputs, errors and weights are
// encoded to a number format, pre-aligned per vector (or per tensor) to signed fixed-point
// mantissas, multiplied on the nibble datapath (kernels/fp_dcim.h) and renormalized to the
// output format. Weights live in a cyclically mapped array read by rows (FP) and diagonals
// (BP). GC and WU run outside the macro in FP32 with FP32 master weights, as the chip's
// training system does. docs/fp_digital.md.
#include <immintrin.h>

#include <algorithm>
#include <bit>
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
#include "pimtrain/kernels/fp_dcim.h"
#include "pimtrain/kernels/gemm.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/numerics/fixed_point.h"
#include "pimtrain/numerics/formats.h"
#include "pimtrain/numerics/prealign.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace pim {
namespace {

PIM_DECLARE_COUNTERS(
    FpDigitalCounters, "macro/fp_digital",
    {"weight_writes", "cell write", "WU", "mantissa cells written when the weights are programmed"},
    {"exponent_writes", "exponent", "WU", "shared weight exponents written (8-bit registers)"},
    {"array_cells_allocated", "cell", "WU", "cells of the arrays the layout occupies (occupancy)"},
    {"array_cells_used", "cell", "WU", "cells holding weight bits (occupancy)"},
    {"format_conversions", "element", "FP BP WU", "elements converted into the operand format"},
    {"exponent_adds", "element", "FP BP",
     "per-element exponent offsets folded in (tensor scaling)"},
    {"array_row_reads", "port read", "FP BP",
     "port-wide reads of weight nibbles, one per multiplier pass: a row FP, a diagonal BP"},
    {"rotations", "port rotation", "FP BP",
     "port-wide rotations of the input segment (cyclic transpose), one per read off offset 0"},
    {"fp_accumulations", "FP32 add", "FP BP",
     "FP32 adds merging the results of successive aligned blocks (align_block > 0)"},
    {"multiplier_input_loads", "nibble", "FP BP",
     "input nibbles loaded into the multipliers: one per multiplier and pass (gated ones too)"},
    {"input_buffer_reads", "element", "FP BP", "input elements read out to the multipliers"},
    {"output_buffer_writes", "element", "FP BP", "finished outputs written"},
    {"off_macro_fp32_macs", "MAC", "GC", "FP32 MACs of the gradient unit outside the macro"},
    {"gc_macro_macs", "MAC", "GC",
     "gradient MACs run on the macro itself (gradient_path: macro; SP-PIM)"},
    {"gc_multiplier_ops", "4b x 4b multiply", "GC",
     "nibble multiplies of the on-macro GC: nibbles(input) x nibbles(error) per MAC whose "
     "activation and error are both nonzero"},
    {"gc_gated_ops", "4b x 4b multiply", "GC",
     "nibble multiplies of on-macro GC MACs with a zero activation or error (dual sparsity)"},
    {"gc_tree_passes", "tree pass", "GC",
     "adder-tree passes of the on-macro GC (per tree_inputs-long block and nibble pair, skipped "
     "when the block's activation or error segment is all zero)"});

enum class KernelChoice { kFast, kRef };
enum class AlignMode { kVector, kLayer };

// Stream ids for stochastic rounding (one per tensor role).
constexpr uint64_t kStreamInput = 1;
constexpr uint64_t kStreamError = 2;
constexpr uint64_t kStreamWeight = 3;

const std::vector<std::string> kOperandFormats = {"int4", "int8", "e4m3", "e5m2", "bf16", "fp16"};
const std::vector<std::string> kOutputFormats = {"e4m3", "e5m2", "bf16", "fp16", "fp32"};

fp::Format FormatOf(const ConfigNode& p, const char* key) {
  fp::Format f;
  PIM_CHECK(fp::ParseFormat(p.GetString(key), &f));  // the schema's enum checked the name
  return f;
}

// The aligned width of a format's mantissas by default: the significand with its hidden bit,
// rounded to whole nibbles minus the sign (4 for FP8, 8 for BF16 as two nibbles, 12 for FP16);
// integers use their own width.
int DefaultBits(fp::Format f) {
  switch (f) {
    case fp::Format::kInt4: return 4;
    case fp::Format::kInt8: return 8;
    case fp::Format::kE4M3: return 4;
    case fp::Format::kE5M2: return 4;
    case fp::Format::kBF16: return 8;
    case fp::Format::kFP16: return 12;
    default: return 8;
  }
}

int WidthOf(const ConfigNode& p, const char* key, fp::Format f) {
  const ConfigNode& n = p.At(key);
  const int64_t b = n.AsInt();
  if (b == 0) return DefaultBits(f);
  if (fp::IsInt(f) && b != fp::Info(f).bits) {
    throw ConfigError(n.Where() + ": " + n.text() + " does not match the integer format " +
                      fp::Name(f) + " (integers feed the datapath at their own width; use 0)");
  }
  if (b < 2) throw ConfigError(n.Where() + ": " + n.text() + " is below 2 bits (sign + 1)");
  return static_cast<int>(b);
}

// max |v| over the finite elements (NaN and inf fail `a < inf`), 8 lanes at a time.
float FiniteMaxAbs(ConstMatrixView v) {
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 vmax = _mm256_setzero_ps();
  float m = 0.0f;
  for (int64_t r = 0; r < v.rows; ++r) {
    const float* row = v.Row(r);
    int64_t c = 0;
    for (; c + 8 <= v.cols; c += 8) {
      const __m256 a = _mm256_and_ps(_mm256_loadu_ps(row + c), abs_mask);
      vmax = _mm256_max_ps(vmax, _mm256_and_ps(a, _mm256_cmp_ps(a, inf, _CMP_LT_OQ)));
    }
    for (; c < v.cols; ++c) {
      const float a = std::fabs(row[c]);
      if (a < std::numeric_limits<float>::infinity() && a > m) m = a;
    }
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  for (float l : lanes) m = std::max(m, l);
  return m;
}

#if defined(__AVX512F__)
// Horizontal sum and max of 16 int32 lanes, through memory (GCC 12's _mm512_reduce_* trip
// its own uninitialized-variable warnings).
inline int64_t SumLanes(__m512i v) {
  alignas(64) int32_t l[16];
  _mm512_store_si512(l, v);
  int64_t s = 0;
  for (int32_t x : l) s += x;
  return s;
}
inline int32_t MaxLanes(__m512i v) {
  alignas(64) int32_t l[16];
  _mm512_store_si512(l, v);
  int32_t m = l[0];
  for (int32_t x : l) m = std::max(m, x);
  return m;
}
#endif

// How one operand tensor is quantized: its format, aligned width and rounding.
struct OperandSpec {
  fp::Format format = fp::Format::kBF16;
  int bits = 8;
  Rounding rounding = Rounding::kNearestEven;
};

// A set of vectors inside a matrix: vector v, element e is at data[v * vs + e * es]; its
// stochastic-rounding index is v * vi + e * ei (the element's row-major index in the matrix).
struct Vectors {
  const float* data = nullptr;
  int64_t count = 0, len = 0, vs = 0, es = 1, vi = 0, ei = 1;
};

// The result of quantizing and aligning a set of vectors: a[v * len + e] (vector-major) and
// the LSB exponent of each vector.
struct Aligned {
  std::vector<int32_t> a;
  std::vector<int> exp;
};

class FpDigitalMacro final : public Macro {
 public:
  explicit FpDigitalMacro(const ConfigNode& p) {
    input_.format = FormatOf(p, "input_format");
    weight_.format = FormatOf(p, "weight_format");
    error_.format = FormatOf(p, "error_format");
    out_format_ = FormatOf(p, "output_format");
    input_.bits = WidthOf(p, "input_bits", input_.format);
    weight_.bits = WidthOf(p, "weight_bits", weight_.format);
    error_.bits = WidthOf(p, "error_bits", error_.format);
    const Rounding in_round =
        p.GetString("rounding") == "stochastic" ? Rounding::kStochastic : Rounding::kNearestEven;
    input_.rounding = error_.rounding = in_round;
    weight_.rounding = p.GetString("weight_rounding") == "stochastic" ? Rounding::kStochastic
                                                                      : Rounding::kNearestEven;
    align_mode_ = p.GetString("alignment") == "layer" ? AlignMode::kLayer : AlignMode::kVector;
    align_rounding_ = p.GetString("align_rounding") == "nearest" ? fp::AlignRounding::kNearestEven
                                                                 : fp::AlignRounding::kTruncate;
    tensor_scaling_ = p.GetBool("tensor_scaling");
    gc_on_macro_ = p.GetString("gradient_path") == "macro";
    approx_.enabled = p.GetString("mode") == "approximate";
    approx_.dropped_columns = static_cast<int>(p.GetInt("approx_dropped_columns"));
    approx_.or_bits = static_cast<int>(p.GetInt("approx_or_bits"));
    approx_.bias_compensation = p.GetBool("approx_bias_compensation");
    gc_in_format_ = p.GetString("gradient_operands") == "format";
    kernel_ = p.GetString("kernel") == "ref" ? KernelChoice::kRef : KernelChoice::kFast;
    port_bits_ = p.GetInt("port_bits");
    tree_inputs_ = p.GetInt("tree_inputs");
    align_block_ = p.GetInt("align_block");
    // Integer formats carry no per-element exponents: their scale stays one per vector and
    // their blocks add as integers.
    if (fp::IsInt(input_.format) && fp::IsInt(weight_.format) && fp::IsInt(error_.format)) {
      align_block_ = 0;
    }
    if (align_block_ > 0) {
      // Each aligned block is a tile with its own shared exponents, on the same datapath with
      // FP32 results (exact: a block sum has at most 2 x 8 + log2(block) bits).
      tile_config_ = p;
      tile_config_.Set("align_block", ConfigNode::Scalar("0", ScalarType::kInt));
      tile_config_.Set("output_format", ConfigNode::Scalar("fp32", ScalarType::kString));
    }
    cell_bits_ = 4 * kernels::NumNibbles(weight_.bits);
    per_read_ = port_bits_ / cell_bits_;
    if (per_read_ < 1) {
      const ConfigNode& n = p.At("port_bits");
      throw ConfigError(n.Where() + ": " + n.text() + " bits cannot hold one " +
                        std::to_string(cell_bits_) + "-bit stored mantissa");
    }
    spec_.rows = p.GetInt("array_rows");
    spec_.cols = per_read_;
    spec_.arrays_per_core = p.GetInt("arrays_per_core");
    spec_.cores = p.GetInt("cores");
    spec_.input_bits = input_.bits;
    spec_.weight_bits = weight_.bits;
    spec_.weight_bits_backward = weight_.bits;
    spec_.error_bits = error_.bits;
    spec_.gradient_bits = 32;   // GC in FP32 outside the macro
    spec_.master_weights = true;  // FP32 master weights outside the macro, as the chip's system
  }

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Enum("input_format", kOperandFormats)
              .Default("bf16")
              .Doc("format of forward inputs (activations)"));
    s.Add(Param::Enum("weight_format", kOperandFormats)
              .Default("bf16")
              .Doc("format the weights are encoded to before pre-alignment"));
    s.Add(Param::Enum("error_format", kOperandFormats)
              .Default("bf16")
              .Doc("format of the errors in BP (e5m2 for FP8 training)"));
    s.Add(Param::Enum("output_format", kOutputFormats)
              .Default("bf16")
              .Doc("format the MAC results are renormalized to (round to nearest even)"));
    for (const char* k : {"input_bits", "weight_bits", "error_bits"}) {
      s.Add(Param::Int(k).Default(0).Range(0, 16).Unit("bit").Doc(
          "aligned mantissa width in two's complement, sign included (0: by format: 4 for "
          "FP8 and INT4, 8 for BF16 and INT8, 12 for FP16)"));
    }
    s.Add(Param::Enum("alignment", {"vector", "layer"})
              .Default("vector")
              .Doc("shared exponent per vector (one input vector, one stored weight column) or "
                   "per tensor (the older layer-wise pre-alignment)"));
    s.Add(Param::Enum("align_rounding", {"truncate", "nearest"})
              .Default("truncate")
              .Doc("mantissa bits shifted past the width are dropped, or rounded to nearest "
                   "even with guard and sticky bits"));
    s.Add(Param::Enum("rounding", {"nearest", "stochastic"})
              .Default("nearest")
              .Doc("rounding of inputs and errors to their formats"));
    s.Add(Param::Enum("weight_rounding", {"nearest", "stochastic"})
              .Default("nearest")
              .Doc("rounding of the FP32 master weights to the weight format"));
    s.Add(Param::Bool("tensor_scaling")
              .Default(true)
              .Doc("scale each tensor by a power of two to the top of its format's range before "
                   "encoding (undone exactly after the MAC) [assume]"));
    s.Add(Param::Enum("mode", {"accurate", "approximate"})
              .Default("accurate")
              .Doc("accurate: exact MAC (training); approximate: broken-array multipliers, "
                   "lower-part-OR adders, bias compensation (inference)"));
    s.Add(Param::Int("approx_dropped_columns")
              .Default(2)
              .Range(0, 7)
              .Doc("approximate mode: partial-product terms a_i b_j with i + j below this are "
                   "dropped (0: exact multiplier)"));
    s.Add(Param::Int("approx_or_bits")
              .Default(2)
              .Range(0, 13)
              .Unit("bit")
              .Doc("approximate mode: low bits of every adder-tree adder computed as OR"));
    s.Add(Param::Bool("approx_bias_compensation")
              .Default(true)
              .Doc("approximate mode: add the expected dropped value per performed multiply"));
    s.Add(Param::Enum("gradient_path", {"off_macro", "macro"})
              .Default("off_macro")
              .Doc("where GC runs: an FP32 unit outside the macro (ISSCC'25 14.5), or the macro's "
                   "own multipliers on the input/error-format operands (SP-PIM runs FP and GC on "
                   "the same macro); counted as such (docs/cost.md, \"fp_dcim\")"));
    s.Add(Param::Enum("gradient_operands", {"format", "fp32"})
              .Default("format")
              .Doc("GC operands outside the macro: X and dY rounded to the input and error "
                   "formats (what the chip holds), or the FP32 values"));
    s.Add(Param::Int("port_bits")
              .Default(256)
              .Range(4, 1 << 16)
              .Unit("bit")
              .Doc("read port width: one row or diagonal read (256 in the paper)"));
    s.Add(Param::Int("array_rows")
              .Default(256)
              .Range(1, 1 << 20)
              .Doc("physical rows per array [assume]"));
    s.Add(Param::Int("tree_inputs")
              .Default(64)
              .Range(1, 1 << 12)
              .Doc("inputs of one adder tree = multipliers per pass (64 in the paper)"));
    s.Add(Param::Int("align_block")
              .Default(0)
              .Range(0, 1 << 16)
              .Doc("elements that share one exponent (0: the whole reduction vector of a call); "
                   "each block's MAC result is converted to FP32 and the blocks are added in "
                   "FP32 in reduction order, then rounded to output_format (docs/fp_digital.md)"));
    s.Add(Param::Int("arrays_per_core").Default(1).Range(1, 1 << 16).Doc("arrays per core"));
    s.Add(Param::Int("cores").Default(1).Range(1, 1 << 16).Doc("cores"));
    s.Add(Param::Enum("kernel", {"fast", "ref"})
              .Default("fast")
              .Doc("fast: exact integer GEMM, fused encode and align; ref: every nibble, tree "
                   "level and port read (identical results, slow)"));
    return s;
  }

  const MacroSpec& spec() const override { return spec_; }
  CounterSet Counters() const override {
    return CounterSet::Union("macro/fp_digital", {&kernels::DcimKernelCounters(),
                                                  &fp::AlignCounters(), &FpDigitalCounters()});
  }

  std::map<std::string, double> HardwareParams() const override {
    auto d = [](auto v) { return static_cast<double>(v); };
    return {{"port_bits", d(port_bits_)},
            {"array_rows", d(spec_.rows)},
            {"weights_per_read", d(per_read_)},
            {"weight_cell_bits", d(cell_bits_)},
            {"tree_inputs", d(tree_inputs_)},
            {"multipliers", d(tree_inputs_)},
            {"multiplier_bits", 4.0},
            {"tree_result_bits", 14.0},
            {"arrays_total", d(spec_.arrays_per_core * spec_.cores)},
            {"input_bits", d(input_.bits)},
            {"weight_bits", d(weight_.bits)},
            {"error_bits", d(error_.bits)},
            {"input_format", d(static_cast<int>(input_.format))},
            {"weight_format", d(static_cast<int>(weight_.format))},
            {"error_format", d(static_cast<int>(error_.format))},
            {"output_format", d(static_cast<int>(out_format_))},
            {"vector_wise_alignment", align_mode_ == AlignMode::kVector ? 1.0 : 0.0},
            {"approximate", approx_.enabled ? 1.0 : 0.0},
            {"approx_dropped_columns", d(approx_.dropped_columns)},
            {"approx_or_bits", d(approx_.or_bits)},
            {"align_block", d(align_block_)}};
  }

  void Program(ConstMatrixView w, const RunContext& ctx, ActionCounts& counts) override {
    rows_ = w.rows;
    cols_ = w.cols;
    if (align_block_ > 0) {
      ProgramTiles(w, ctx, counts);
      return;
    }
    // The weight vectors are W's columns (one per output): vector c, element r at (r, c).
    Vectors v{w.data, cols_, rows_, 1, w.ld, 1, cols_};
    fp::AlignCounts ac;
    const float max_abs = NeedsMaxAbs(weight_) ? FiniteMaxAbs(w) : 0.0f;
    const int s = ScaleExponent(weight_.format, max_abs);
    aw_.resize(static_cast<size_t>(rows_ * cols_));
    if (FastPath(weight_)) {
      wexp_.resize(static_cast<size_t>(cols_));
      const bool layer = align_mode_ == AlignMode::kLayer;
      // The kernel's weight caches are filled row by row as the rows are aligned, while each
      // row is still in cache, instead of in a second pass over aw_.
      PrepareCaches();
      AlignFastMatrix(w, /*by_rows=*/false, weight_, s, nullptr, layer,
                      layer ? LayerExponent(weight_, s, max_abs) : 0, aw_.data(), wexp_.data(),
                      ac, ctx.pool, /*caches=*/true);
    } else {
      Aligned al = Align(v, weight_, s, nullptr, max_abs, Rng(ctx, kStreamWeight), ac, ctx.pool);
      // Vector-major = cols x rows = S, the stored matrix; aw_ is W's layout.
      aw_t_ = std::move(al.a);
      for (int64_t c = 0; c < cols_; ++c) {
        for (int64_t r = 0; r < rows_; ++r) aw_[r * cols_ + c] = aw_t_[c * rows_ + r];
      }
      wexp_ = std::move(al.exp);
    }
    for (int& e : wexp_) e -= s;  // undo the tensor scale
    if (kernel_ == KernelChoice::kRef) {
      store_.Store(aw_t_.data(), cols_, rows_, per_read_);
    } else if (!FastPath(weight_)) {
      BuildCaches();
    }
    ac.AddTo(counts);
    counts.Add("format_conversions", rows_ * cols_);
    counts.Add("weight_writes", rows_ * cols_ * cell_bits_);  // every cell of every mantissa
    counts.Add("exponent_writes", align_mode_ == AlignMode::kVector ? cols_ : 1);
    // Occupancy: S (cols x rows) in n x n blocks, each block n physical rows of port_bits.
    const int64_t n = per_read_;
    const int64_t phys_rows = (cols_ + n - 1) / n * n * ((rows_ + n - 1) / n);
    const int64_t arrays = (phys_rows + spec_.rows - 1) / spec_.rows;
    counts.Add("array_cells_allocated", arrays * spec_.rows * port_bits_);
    counts.Add("array_cells_used", rows_ * cols_ * cell_bits_);
  }

  void Multiply(ConstMatrixView x, MatrixView y, Direction dir, const RunContext& ctx,
                ActionCounts& counts) override {
    const bool fwd = dir == Direction::kForward;
    const int64_t k = fwd ? rows_ : cols_, n = fwd ? cols_ : rows_, m = x.rows;
    PIM_CHECK_MSG(x.cols == k && y.cols == n && x.rows == y.rows,
                  "Multiply: operand shapes do not match the programmed weights");
    if (align_block_ > 0) {
      MultiplyTiles(x, y, dir, ctx, counts);
      return;
    }
    const OperandSpec& spec = fwd ? input_ : error_;
    const float max_abs = ctx.input_max_abs >= 0 ? ctx.input_max_abs
                          : NeedsMaxAbs(spec)    ? FiniteMaxAbs(x)
                                                 : 0.0f;
    const int s = ScaleExponent(spec.format, max_abs);
    Vectors v{x.data, m, k, x.ld, 1, k, 1};
    fp::AlignCounts ac;
    // BP with per-column weight exponents: e_j W_ij = (e_j 2^(wexp_j)) a_ij, so the column
    // exponents are added to the errors' exponents before their alignment; with one weight
    // exponent (layer-wise) it scales the outputs instead.
    const bool fold = !fwd && align_mode_ == AlignMode::kVector;
    Aligned& al = aligned_;  // kept between calls (no page faults on every batch)
    bool fused_x = false;  // x_f32_ and x_nz_ hold the kernel's operand data
    if (FastPath(spec)) {
      al.a.resize(static_cast<size_t>(m * k));
      al.exp.resize(static_cast<size_t>(m));
      const bool layer = align_mode_ == AlignMode::kLayer;
      // The kernel's float operand and nibble counts come out of the align pass when the
      // kernel will multiply in float (kernels::DcimUsesFloat) in accurate mode.
      fused_x = !approx_.enabled &&
                kernels::DcimUsesFloat(spec.bits, weight_.bits, k) &&
                kernels::NumNibbles(spec.bits) <= 4;
      if (fused_x) {
        x_f32_.resize(static_cast<size_t>(m * k));
        x_nz_.assign(static_cast<size_t>(kernels::NumNibbles(spec.bits) * k), 0);
      }
      AlignFastMatrix(x, /*by_rows=*/true, spec, s, fold ? wexp_.data() : nullptr, layer,
                      layer ? LayerExponent(spec, s, max_abs) : 0, al.a.data(), al.exp.data(), ac,
                      ctx.pool, false, fused_x ? x_f32_.data() : nullptr,
                      fused_x ? x_nz_.data() : nullptr);
    } else {
      al = Align(v, spec, s, fold ? wexp_.data() : nullptr, max_abs,
                 Rng(ctx, fwd ? kStreamInput : kStreamError), ac, ctx.pool);
    }
    for (int& e : al.exp) e += (!fwd && !fold) ? wexp_[0] - s : -s;
    ac.AddTo(counts);
    counts.Add("format_conversions", m * k);
    if (fold) counts.Add("exponent_adds", m * k);

    kernels::DcimProblem p;
    p.m = m;
    p.k = k;
    p.n = n;
    p.x = {al.a.data(), k, 1, spec.bits};
    p.x_exp = al.exp.data();
    if (fused_x && kernel_ == KernelChoice::kFast) {
      p.x_f32 = x_f32_.data();
      p.x_nz = x_nz_.data();
    }
    p.tree_inputs = tree_inputs_;
    p.approx = approx_;
    p.out_format = out_format_;
    std::vector<int32_t> read;  // ref: the operand as the port reads deliver it
    int64_t reads = 0, rotations = 0;
    if (kernel_ == KernelChoice::kRef) {
      read = ReadThroughPort(fwd, &reads, &rotations);
      p.w = {read.data(), n, 1, weight_.bits};
    } else if (fwd) {
      p.w = {aw_.data(), cols_, 1, weight_.bits};
      p.w_cache = &fwd_cache_;
    } else {
      p.w = {aw_.data(), 1, cols_, weight_.bits};  // S = W^T read through strides
      p.w_cache = &bwd_cache_;
    }
    if (fwd) p.w_exp = wexp_.data();
    // The kernel writes a dense m x n block; y may be strided.
    std::vector<float> out;
    const bool dense = y.ld == n;
    if (!dense) out.resize(static_cast<size_t>(m * n));
    p.y = dense ? y.data : out.data();
    p.ldy = n;
    kernels::DcimCounts kc;
    if (kernel_ == KernelChoice::kRef) {
      kernels::ref::DcimMatMul(p, kc);
    } else {
      kernels::fast::DcimMatMul(p, kc, ctx.pool != nullptr ? ctx.pool : &DefaultPool());
    }
    kc.AddTo(counts);
    if (!dense) {
      for (int64_t i = 0; i < m; ++i) std::copy(&out[i * n], &out[i * n] + n, y.Row(i));
    }
    if (kernel_ == KernelChoice::kRef) {
      // The layout the reads walked: one n_p-wide row (diagonal) per (output, segment), at a
      // nonzero rotation for every output off a block's offset 0. The passes re-read it
      // (PortCounts).
      const int64_t np = per_read_, segments = (k + np - 1) / np;
      PIM_CHECK(reads == n * segments && rotations == (n - (n + np - 1) / np) * segments);
    }
    PortCounts(m, k, n, spec.bits, counts);
  }

  // GC outside the macro [secondary: "gradient calculation and update are outside it"]: exact
  // FP32 dW = X^T dY on the operands as the chip holds them (rounded to the input and error
  // formats, nearest even) or on the FP32 values; counted as off-macro FP32 MACs.
  void GradientCalc(ConstMatrixView x, ConstMatrixView dy, MatrixView dw, const RunContext& ctx,
                    ActionCounts& counts) override {
    PIM_CHECK_MSG(x.rows == dy.rows && dw.rows == x.cols && dw.cols == dy.cols,
                  "GradientCalc: operand shapes do not match");
    ThreadPool* pool = ctx.pool != nullptr ? ctx.pool : &DefaultPool();
    std::vector<float>& xr = gc_x_;
    std::vector<float>& dyr = gc_dy_;
    ConstMatrixView xa = x, da = dy;
    if (gc_in_format_) {
      RoundedCopy(x, input_.format, xr);
      RoundedCopy(dy, error_.format, dyr);
      xa = ConstMatrixView(xr.data(), x.rows, x.cols, x.cols);
      da = ConstMatrixView(dyr.data(), dy.rows, dy.cols, dy.cols);
    }
    kernels::GemmArgs g;
    g.trans_a = kernels::Trans::kYes;
    g.m = x.cols;
    g.n = dy.cols;
    g.k = x.rows;
    g.a = xa.data;
    g.lda = xa.ld;
    g.b = da.data;
    g.ldb = da.ld;
    g.c = dw.data;
    g.ldc = dw.ld;
    kernels::fast::Gemm(g, pool);
    const int64_t macs = x.rows * x.cols * dy.cols;
    if (!gc_on_macro_) {
      counts.Add("off_macro_fp32_macs", macs);
      return;
    }
    // On the macro: every nibble of the input against every nibble of the error, the reduction
    // over the batch cut into tree_inputs-long blocks (one tree pass per block and nibble pair).
    // Dual sparsity (SP-PIM): a MAC with a zero activation or a zero error is not issued (its
    // nibble multiplies are counted as gated), and a tree pass whose activation segment or error
    // segment is all zero (a zero flag per segment) is skipped: a pass runs for (r, c) in a
    // block when x[., r] and dy[., c] both have a nonzero element there.
    const int64_t pairs = kernels::NumNibbles(input_.bits) * kernels::NumNibbles(error_.bits);
    std::vector<int64_t> nz_x(static_cast<size_t>(x.rows)), nz_dy(static_cast<size_t>(x.rows));
    int64_t performed = 0, passes = 0;
    std::vector<char> any_x(static_cast<size_t>(x.cols)), any_dy(static_cast<size_t>(dy.cols));
    for (int64_t b0 = 0; b0 < x.rows; b0 += tree_inputs_) {
      const int64_t b1 = std::min(x.rows, b0 + tree_inputs_);
      std::fill(any_x.begin(), any_x.end(), 0);
      std::fill(any_dy.begin(), any_dy.end(), 0);
      for (int64_t b = b0; b < b1; ++b) {
        int64_t nx = 0, nd = 0;
        const float* xr_b = xa.Row(b);
        const float* dr_b = da.Row(b);
        for (int64_t r = 0; r < x.cols; ++r) {
          const bool nz = xr_b[r] != 0.0f;
          nx += nz;
          any_x[r] |= nz;
        }
        for (int64_t c = 0; c < dy.cols; ++c) {
          const bool nz = dr_b[c] != 0.0f;
          nd += nz;
          any_dy[c] |= nz;
        }
        performed += nx * nd;
      }
      passes += static_cast<int64_t>(std::count(any_x.begin(), any_x.end(), 1)) *
                static_cast<int64_t>(std::count(any_dy.begin(), any_dy.end(), 1));
    }
    counts.Add("gc_macro_macs", macs);
    counts.Add("gc_multiplier_ops", performed * pairs);
    counts.Add("gc_gated_ops", (macs - performed) * pairs);
    counts.Add("gc_tree_passes", passes * pairs);
  }

  void ReadWeights(MatrixView w) const override {
    PIM_CHECK_MSG(w.rows == rows_ && w.cols == cols_, "ReadWeights: shape mismatch");
    if (align_block_ > 0) {
      const int64_t ab = align_block_, nt = (cols_ + ab - 1) / ab;
      for (size_t i = 0; i < tiles_.size(); ++i) {
        const int64_t r0 = static_cast<int64_t>(i) / nt * ab, c0 = static_cast<int64_t>(i) % nt * ab;
        tiles_[i]->ReadWeights(MatrixView(w.data + r0 * w.ld + c0, std::min(ab, rows_ - r0),
                                          std::min(ab, cols_ - c0), w.ld));
      }
      return;
    }
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t c = 0; c < cols_; ++c) {
        w.Row(r)[c] = static_cast<float>(std::ldexp(static_cast<double>(aw_[r * cols_ + c]),
                                                    wexp_[static_cast<size_t>(c)]));
      }
    }
  }

 private:
  // align_block > 0: W is cut into align_block x align_block tiles, each a macro of its own
  // (alignment: vector, FP32 results): a tile's weight vectors (a column of W within its rows)
  // and its input segments have their own shared exponents, so every exponent covers one block
  // of the reduction in both directions (BP folds the tile's column exponents into the error
  // segment it meets). The tiles' results are added in FP32 in reduction order (counted as
  // fp_accumulations) and rounded once to output_format (a normalization). Each tile draws its
  // stochastic rounding from its own key.
  RunContext TileContext(const RunContext& ctx, size_t tile) const {
    RunContext c = ctx;
    c.seed = MixKey(ctx.seed, 0xA11Cu, static_cast<uint64_t>(tile));
    return c;
  }

  void ProgramTiles(ConstMatrixView w, const RunContext& ctx, ActionCounts& counts) {
    const int64_t ab = align_block_, ns = (rows_ + ab - 1) / ab, nt = (cols_ + ab - 1) / ab;
    if (tiles_.size() != static_cast<size_t>(ns * nt)) {
      tiles_.clear();
      for (int64_t i = 0; i < ns * nt; ++i) {
        tiles_.push_back(std::make_unique<FpDigitalMacro>(tile_config_));
      }
    }
    for (int64_t s = 0; s < ns; ++s) {
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t r0 = s * ab, c0 = t * ab;
        tiles_[s * nt + t]->Program(ConstMatrixView(w.data + r0 * w.ld + c0,
                                                    std::min(ab, rows_ - r0),
                                                    std::min(ab, cols_ - c0), w.ld),
                                    TileContext(ctx, static_cast<size_t>(s * nt + t)), counts);
      }
    }
  }

  void MultiplyTiles(ConstMatrixView x, MatrixView y, Direction dir, const RunContext& ctx,
                     ActionCounts& counts) {
    const bool fwd = dir == Direction::kForward;
    const int64_t ab = align_block_, ns = (rows_ + ab - 1) / ab, nt = (cols_ + ab - 1) / ab;
    const int64_t m = x.rows, n = fwd ? cols_ : rows_;
    // The tensor scale of the whole input, as without tiles.
    RunContext base = ctx;
    if (base.input_max_abs < 0) base.input_max_abs = FiniteMaxAbs(x);
    std::vector<float> acc(static_cast<size_t>(m * n), 0.0f), part;
    ActionCounts tile_counts;
    // Forward: output block t sums the row blocks s; BP: output block s sums the column blocks t.
    const int64_t outer = fwd ? nt : ns, inner = fwd ? ns : nt;
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        const int64_t s = fwd ? i : o, t = fwd ? o : i;
        const int64_t r0 = s * ab, c0 = t * ab;
        const int64_t in0 = fwd ? r0 : c0, out0 = fwd ? c0 : r0;
        const int64_t in_len = std::min(ab, (fwd ? rows_ : cols_) - in0);
        const int64_t out_len = std::min(ab, n - out0);
        part.resize(static_cast<size_t>(m * out_len));
        const size_t tile = static_cast<size_t>(s * nt + t);
        RunContext tc = TileContext(base, tile);
        tiles_[tile]->Multiply(ConstMatrixView(x.data + in0, m, in_len, x.ld),
                               MatrixView(part.data(), m, out_len, out_len), dir, tc, tile_counts);
        for (int64_t r = 0; r < m; ++r) {
          float* a = acc.data() + r * n + out0;
          const float* b = part.data() + r * out_len;
          for (int64_t j = 0; j < out_len; ++j) a[j] = i == 0 ? b[j] : a[j] + b[j];
        }
        if (i > 0) counts.Add("fp_accumulations", m * out_len);
      }
    }
    const bool round = out_format_ != fp::Format::kFP32;
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        const float v = acc[static_cast<size_t>(r * n + j)];
        y.Row(r)[j] = round ? static_cast<float>(fp::Decode(out_format_, fp::Encode(out_format_, v)))
                            : v;
      }
    }
    if (round) counts.Add("normalizations", m * n);
    // A tile's partial results go to the FP32 accumulator; only the finished outputs are
    // written to the output buffer.
    for (const auto& [name, v] : tile_counts.counts()) {
      counts.Add(name, name == "output_buffer_writes" ? m * n : v);
    }
  }

  static CounterRng Rng(const RunContext& ctx, uint64_t stream) {
    return CounterRng(MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                             static_cast<uint64_t>(ctx.step), static_cast<uint64_t>(ctx.stage)),
                      stream);
  }

  // The power-of-two tensor scale applied before encoding (0 without tensor_scaling, and for
  // integers, whose scale is their shared exponent).
  int ScaleExponent(fp::Format f, float max_abs) const {
    // BF16 has FP32's exponent range: a scale could only push values out of it.
    if (!tensor_scaling_ || fp::IsInt(f) || f == fp::Format::kBF16) return 0;
    return fp::TensorScaleExponent(f, max_abs);
  }

  // Whether encoding `spec` looks at the tensor's max |x|: only for a tensor scale (floating
  // point other than BF16) or the layer-wise exponent. Vector-wise BF16, the training default,
  // skips the scan, a full extra pass over every weight and input.
  bool NeedsMaxAbs(const OperandSpec& spec) const {
    return align_mode_ == AlignMode::kLayer ||
           (tensor_scaling_ && !fp::IsInt(spec.format) && spec.format != fp::Format::kBF16);
  }

  // Round-to-format copy for the GC operands (tensor-scaled like the MAC operands).
  void RoundedCopy(ConstMatrixView v, fp::Format f, std::vector<float>& out) const {
    out.resize(static_cast<size_t>(v.rows * v.cols));
    // The max |v| scan only matters for integers and tensor-scaled formats (not BF16).
    const bool scaled =
        fp::IsInt(f) || (tensor_scaling_ && f != fp::Format::kBF16);
    const float max_abs = scaled ? FiniteMaxAbs(v) : 0.0f;
    int e = 0;
    if (fp::IsInt(f)) {
      e = PowerOfTwoExponent(max_abs, fp::Info(f).bits, Signedness::kSigned);
    } else {
      e = -ScaleExponent(f, max_abs);
    }
    if (kernel_ == KernelChoice::kFast && !fp::IsInt(f)) {
      // The fast encoder's rounded value times 2^e: one float multiply by a power of two, the
      // same single rounding as the double product below.
      const FastFormat ff = MakeFastFormat(f);
      std::vector<uint32_t> bits(static_cast<size_t>(v.cols));
      const float scale = std::ldexp(1.0f, e);
      const bool exact_scale = e > -126 && e < 127;
      for (int64_t r = 0; r < v.rows; ++r) {
        RoundFast(v.Row(r), v.cols, -e, f, ff, nullptr, bits.data(), nullptr);
        float* dst = out.data() + r * v.cols;
        for (int64_t c = 0; c < v.cols; ++c) {
          const float q = std::bit_cast<float>(bits[c]);
          dst[c] = exact_scale ? q * scale : static_cast<float>(std::ldexp(double{q}, e));
        }
      }
      return;
    }
    for (int64_t r = 0; r < v.rows; ++r) {
      for (int64_t c = 0; c < v.cols; ++c) {
        const float x = v.Row(r)[c];
        const double q = fp::Decode(f, fp::Encode(f, std::isnan(x) ? 0.0 : std::ldexp(x, -e),
                                                  Rounding::kNearestEven, 0,
                                                  fp::Overflow::kSaturate));
        out[r * v.cols + c] = static_cast<float>(std::ldexp(q, e));
      }
    }
    return;
  }

  // Encodes (after the tensor scale 2^s) and aligns every vector of `v` to `spec`'s width:
  // vector-wise (each vector's own shared exponent, with per-element exponent offsets `o` when
  // given) or layer-wise (the exponent reachable by the tensor's max |x|). NaN encodes as 0;
  // overflow saturates (an inf would poison every output of its vector). Integer formats take a
  // power-of-two scale per vector or per tensor instead.
  // The layer-wise shared exponent of a tensor whose largest |x| is max_abs.
  int LayerExponent(const OperandSpec& spec, int s, float max_abs) const {
    return fp::IsInt(spec.format) ? PowerOfTwoExponent(max_abs, spec.bits, Signedness::kSigned)
                                  : fp::CeilExponent(spec.format, std::ldexp(double{max_abs}, s));
  }

  // Whether the fused fast path applies (fast kernel, floating point, nearest-even encoding).
  bool FastPath(const OperandSpec& spec) const {
    return kernel_ == KernelChoice::kFast && !fp::IsInt(spec.format) &&
           spec.rounding == Rounding::kNearestEven;
  }

  Aligned Align(const Vectors& v, const OperandSpec& spec, int s, const int* o, float max_abs,
                const CounterRng& rng, fp::AlignCounts& counts, ThreadPool* pool) const {
    Aligned al;
    al.a.resize(static_cast<size_t>(v.count * v.len));
    al.exp.resize(static_cast<size_t>(v.count));
    const bool is_int = fp::IsInt(spec.format);
    const bool layer = align_mode_ == AlignMode::kLayer;
    const int layer_exp = layer ? LayerExponent(spec, s, max_abs) : 0;
    std::mutex mu;
    auto run = [&](int64_t v0, int64_t v1) {
      fp::AlignCounts local;
      std::vector<uint32_t> codes(static_cast<size_t>(v.len));
      for (int64_t i = v0; i < v1; ++i) {
        const float* src = v.data + i * v.vs;
        int32_t* out = al.a.data() + i * v.len;
        if (is_int) {
          al.exp[i] = AlignInt(src, v, i, spec, o, layer, layer_exp, rng, out, local);
        } else {
          for (int64_t e = 0; e < v.len; ++e) {
            const float x = src[e * v.es];
            const uint64_t idx = static_cast<uint64_t>(i * v.vi + e * v.ei);
            const uint32_t rnd =
                spec.rounding == Rounding::kStochastic ? rng.Block(idx >> 2)[idx & 3] : 0;
            codes[e] = fp::Encode(spec.format, std::isnan(x) ? 0.0 : std::ldexp(double{x}, s),
                                  spec.rounding, rnd, fp::Overflow::kSaturate);
          }
          int shared = layer_exp;
          if (!layer) {
            if (!fp::SharedExponent(spec.format, codes.data(), v.len, 1, o, &shared, local)) {
              shared = 0;  // all zero: any exponent aligns them to 0
            }
          } else {
            local.exponent_compares += v.len;  // the tensor's max search, element by element
          }
          al.exp[i] = fp::AlignVector(spec.format, codes.data(), v.len, 1, o, shared, spec.bits,
                                      align_rounding_, out, 1, local);
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      counts += local;
    };
    if (pool != nullptr && v.count > 1) {
      pool->ParallelFor(v.count, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, v.len)), run);
    } else {
      run(0, v.count);
    }
    return al;
  }

  // Integer formats: q = round(x / 2^e) clipped, e the power-of-two exponent of the vector's
  // (or the tensor's) max |x|: the shared exponent is the scale, no mantissa is shifted.
  // With offsets o (BP), element e is x_e 2^(o_e) (exact in double).
  int AlignInt(const float* src, const Vectors& v, int64_t i, const OperandSpec& spec,
               const int* o, bool layer, int layer_exp, const CounterRng& rng, int32_t* out,
               fp::AlignCounts& c) const {
    auto value = [&](int64_t e) {
      const float x = src[e * v.es];
      return std::isnan(x) ? 0.0 : std::ldexp(double{x}, o ? o[e] : 0);
    };
    double m = 0;
    for (int64_t e = 0; e < v.len; ++e) {
      const double a = std::fabs(value(e));
      if (a < std::numeric_limits<double>::infinity() && a > m) m = a;
    }
    c.exponent_compares += v.len;
    const int exp = layer ? layer_exp : PowerOfTwoExponent(m, spec.bits, Signedness::kSigned);
    for (int64_t e = 0; e < v.len; ++e) {
      const uint64_t idx = static_cast<uint64_t>(i * v.vi + e * v.ei);
      const uint32_t rnd =
          spec.rounding == Rounding::kStochastic ? rng.Block(idx >> 2)[idx & 3] : 0;
      const uint32_t code =
          fp::Encode(spec.format, std::ldexp(value(e), -exp), spec.rounding, rnd);
      const fp::Fields f = fp::Unpack(spec.format, code);
      out[e] = f.sign ? -f.sig : f.sig;
    }
    return exp;
  }

  // The constants of the fast encoder for one format (bit arithmetic on floats).
  struct FastFormat {
    uint32_t max_bits = 0;   // bits of the largest finite value (saturation)
    uint32_t emin_bits = 0;  // bits of 2^emin (below: the subnormal quantum)
    int drop = 0;            // float mantissa bits below the format's
    float magic = 0;         // 2^(emin - M + 23): adding and subtracting it rounds to the quantum
    int emin = 0, man = 0;
  };
  static FastFormat MakeFastFormat(fp::Format f) {
    const fp::FormatInfo& in = fp::Info(f);
    FastFormat ff;
    ff.max_bits = std::bit_cast<uint32_t>(static_cast<float>(in.max_finite));
    ff.emin_bits = std::bit_cast<uint32_t>(std::ldexp(1.0f, in.emin));
    ff.drop = 23 - in.man_bits;
    ff.magic = std::ldexp(1.0f, in.emin - in.man_bits + 23);
    ff.emin = in.emin;
    ff.man = in.man_bits;
    return ff;
  }

  // Pass 1 of the fast path over n contiguous elements: the value scaled by 2^s and rounded
  // to nearest even in the format, saturating, as float bits r[i] (sign included), and its
  // format exponent plus offset, e[i] = max(E_float, emin) + o[i] (e is unused for zeros; e
  // may be null: AlignFast recomputes it from r).
  // Elements the bit arithmetic does not cover (non-finite, or scaled outside [2^-120, 2^100))
  // go through the generic encoder. Exact: x * 2^s is exact in that range. AVX2, 8 at a time,
  // with a scalar tail doing the same integer and float operations.
  //
  // Optionally also the largest e over the nonzero results, the vector's shared exponent
  // (*emax, kNoExp when all are zero), or the same maximum per position across calls
  // (col_max[i] = max(col_max[i], e[i]) for nonzero r[i]): folded into this pass instead of
  // re-reading r and e. Elements fixed up by the generic encoder enter with their final value.
  static constexpr int32_t kNoExp = std::numeric_limits<int32_t>::min();
  static void RoundFast(const float* x, int64_t n, int s, fp::Format f, const FastFormat& ff,
                        const int32_t* o, uint32_t* r, int32_t* e, int32_t* emax = nullptr,
                        int32_t* col_max = nullptr) {
    const float scale = std::ldexp(1.0f, s);
    const bool bf16 = f == fp::Format::kBF16;
    const uint32_t half = bf16 ? 0x7FFFu : (1u << (ff.drop - 1)) - 1u;
    const int drop = bf16 ? 16 : ff.drop;
    const uint32_t keep = ~((1u << drop) - 1u);
    // BF16: the bit rounding covers the whole float range, subnormals included.
    const uint32_t emin_bits = bf16 ? 0u : ff.emin_bits;
    int64_t bad = 0, i = 0;
    int32_t m = kNoExp;
#if defined(__AVX512F__) && defined(__AVX512BW__)
    {
      // The AVX2 loop below, 16 lanes at a time (the same operations, masks for blends).
      const __m512 vscale = _mm512_set1_ps(scale), vmagic = _mm512_set1_ps(ff.magic);
      const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF), one = _mm512_set1_epi32(1);
      const __m512i big = _mm512_set1_epi32(0x717FFFFF), tiny = _mm512_set1_epi32(0x03800000);
      const __m512i vhalf = _mm512_set1_epi32(static_cast<int>(half));
      const __m512i vkeep = _mm512_set1_epi32(static_cast<int>(keep));
      const __m512i vemin_bits = _mm512_set1_epi32(static_cast<int>(emin_bits) - 1);
      const __m512i vmax = _mm512_set1_epi32(static_cast<int>(ff.max_bits));
      const __m512i v127 = _mm512_set1_epi32(127), vemin = _mm512_set1_epi32(ff.emin);
      const __m512i vnone = _mm512_set1_epi32(kNoExp);
      const __m128i vdrop = _mm_cvtsi32_si128(drop);
      __m512i vm = vnone;
      for (; i + 16 <= n; i += 16) {
        const __m512 y = _mm512_mul_ps(_mm512_loadu_ps(x + i), vscale);
        const __m512i u = _mm512_castps_si512(y);
        const __m512i a = _mm512_and_si512(u, abs_mask);
        const __m512i sign = _mm512_andnot_si512(abs_mask, u);
        const __mmask16 is_bad =
            _mm512_cmpgt_epi32_mask(a, big) |
            (_mm512_test_epi32_mask(a, a) & _mm512_cmpgt_epi32_mask(tiny, a));
        bad += is_bad;
        const __m512i lsb = _mm512_and_si512(_mm512_srl_epi32(a, vdrop), one);
        const __m512i normal =
            _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(a, vhalf), lsb), vkeep);
        const __m512i sub = _mm512_castps_si512(
            _mm512_sub_ps(_mm512_add_ps(_mm512_castsi512_ps(a), vmagic), vmagic));
        __m512i q =
            _mm512_mask_mov_epi32(sub, _mm512_cmpgt_epi32_mask(a, vemin_bits), normal);
        q = _mm512_min_epu32(q, vmax);
        _mm512_storeu_si512(r + i, _mm512_or_si512(q, sign));
        const __m512i ef = _mm512_srli_epi32(q, 23);
        __m512i ex = _mm512_max_epi32(_mm512_sub_epi32(_mm512_max_epi32(ef, one), v127), vemin);
        if (o != nullptr) ex = _mm512_add_epi32(ex, _mm512_loadu_si512(o + i));
        if (e != nullptr) _mm512_storeu_si512(e + i, ex);
        if (emax != nullptr || col_max != nullptr) {
          // Zeros have no exponent; bad lanes enter after their fix-up below.
          const __m512i cand =
              _mm512_mask_mov_epi32(vnone, _mm512_test_epi32_mask(q, q) & ~is_bad, ex);
          if (emax != nullptr) vm = _mm512_max_epi32(vm, cand);
          if (col_max != nullptr) {
            _mm512_storeu_si512(col_max + i,
                                _mm512_max_epi32(_mm512_loadu_si512(col_max + i), cand));
          }
        }
      }
      m = std::max(m, MaxLanes(vm));
    }
#endif
    {
      const __m256i vnone = _mm256_set1_epi32(kNoExp);
      __m256i vm = vnone;
      const __m256 vscale = _mm256_set1_ps(scale), vmagic = _mm256_set1_ps(ff.magic);
      const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), one = _mm256_set1_epi32(1);
      const __m256i big = _mm256_set1_epi32(0x717FFFFF), tiny = _mm256_set1_epi32(0x03800000);
      const __m256i vhalf = _mm256_set1_epi32(static_cast<int>(half));
      const __m256i vkeep = _mm256_set1_epi32(static_cast<int>(keep));
      const __m256i vemin_bits = _mm256_set1_epi32(static_cast<int>(emin_bits) - 1);
      const __m256i vmax = _mm256_set1_epi32(static_cast<int>(ff.max_bits));
      const __m256i v127 = _mm256_set1_epi32(127), vemin = _mm256_set1_epi32(ff.emin);
      const __m128i vdrop = _mm_cvtsi32_si128(drop);
      for (; i + 8 <= n; i += 8) {
        const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + i), vscale);
        const __m256i u = _mm256_castps_si256(y);
        const __m256i a = _mm256_and_si256(u, abs_mask);
        const __m256i sign = _mm256_andnot_si256(abs_mask, u);
        const __m256i is_bad = _mm256_or_si256(
            _mm256_cmpgt_epi32(a, big),
            _mm256_andnot_si256(_mm256_cmpeq_epi32(a, _mm256_setzero_si256()),
                                _mm256_cmpgt_epi32(tiny, a)));
        bad += _mm256_movemask_ps(_mm256_castsi256_ps(is_bad));
        const __m256i lsb = _mm256_and_si256(_mm256_srl_epi32(a, vdrop), one);
        const __m256i normal =
            _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(a, vhalf), lsb), vkeep);
        const __m256i sub = _mm256_castps_si256(_mm256_sub_ps(
            _mm256_add_ps(_mm256_castsi256_ps(a), vmagic), vmagic));
        __m256i q = _mm256_blendv_epi8(sub, normal, _mm256_cmpgt_epi32(a, vemin_bits));
        q = _mm256_min_epu32(q, vmax);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + i), _mm256_or_si256(q, sign));
        const __m256i ef = _mm256_srli_epi32(q, 23);
        __m256i ex = _mm256_max_epi32(_mm256_sub_epi32(_mm256_max_epi32(ef, one), v127), vemin);
        if (o != nullptr) {
          ex = _mm256_add_epi32(ex, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o + i)));
        }
        if (e != nullptr) _mm256_storeu_si256(reinterpret_cast<__m256i*>(e + i), ex);
        if (emax != nullptr || col_max != nullptr) {
          // Zeros have no exponent; bad lanes enter after their fix-up below.
          const __m256i skip =
              _mm256_or_si256(_mm256_cmpeq_epi32(q, _mm256_setzero_si256()), is_bad);
          const __m256i cand = _mm256_blendv_epi8(ex, vnone, skip);
          if (emax != nullptr) vm = _mm256_max_epi32(vm, cand);
          if (col_max != nullptr) {
            __m256i* cm = reinterpret_cast<__m256i*>(col_max + i);
            _mm256_storeu_si256(cm, _mm256_max_epi32(_mm256_loadu_si256(cm), cand));
          }
        }
      }
      alignas(32) int32_t lanes[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), vm);
      for (int32_t l : lanes) m = std::max(m, l);
    }
    for (; i < n; ++i) {
      const float y = x[i] * scale;
      const uint32_t u = std::bit_cast<uint32_t>(y);
      const uint32_t a = u & 0x7FFFFFFFu, sign = u & 0x80000000u;
      bad += (a > 0x717FFFFFu) | ((a != 0) & (a < 0x03800000u));
      const uint32_t normal = (a + half + ((a >> drop) & 1u)) & keep;
      const uint32_t sub =
          std::bit_cast<uint32_t>((std::bit_cast<float>(a) + ff.magic) - ff.magic);
      const uint32_t q = std::min(a >= emin_bits ? normal : sub, ff.max_bits);
      r[i] = q | sign;
      const int32_t ei = std::max(std::max(static_cast<int32_t>(q >> 23), 1) - 127, ff.emin) +
                         (o ? o[i] : 0);
      if (e != nullptr) e[i] = ei;
      const bool is_bad = (a > 0x717FFFFFu) | ((a != 0) & (a < 0x03800000u));
      if (q != 0 && !is_bad) {
        m = std::max(m, ei);
        if (col_max != nullptr) col_max[i] = std::max(col_max[i], ei);
      }
    }
    if (emax != nullptr) *emax = m;
    if (bad == 0) return;
    for (int64_t j = 0; j < n; ++j) {
      const float xj = x[j];
      const uint32_t a = std::bit_cast<uint32_t>(xj * scale) & 0x7FFFFFFFu;
      if (std::isfinite(xj) && a <= 0x717FFFFFu && (a == 0 || a >= 0x03800000u)) continue;
      const float v = fp::Decode(f, fp::Encode(f, std::isnan(xj) ? 0.0 : std::ldexp(double{xj}, s),
                                               Rounding::kNearestEven, 0, fp::Overflow::kSaturate));
      r[j] = std::bit_cast<uint32_t>(v);
      const uint32_t q = r[j] & 0x7FFFFFFFu;
      const int32_t ej =
          std::max(std::max(static_cast<int32_t>(q >> 23), 1) - 127, ff.emin) + (o ? o[j] : 0);
      if (e != nullptr) e[j] = ej;
      if (q != 0) {
        if (emax != nullptr) *emax = std::max(*emax, ej);
        if (col_max != nullptr) col_max[j] = std::max(col_max[j], ej);
      }
    }
  }

  // Pass 2: a[i] = R(|r_i| 2^(o_i - t_i)) from the float's 24-bit significand F and exponent
  // Ef: a right shift of F by t - o - Ef + 23 with guard and sticky bits (the same value and
  // rounding as AlignVector's shift of the format significand), saturated; and AlignVector's
  // counts (s_i = E* - E_i + M + 2 - W, E_i + o_i = e_i, RoundFast's e recomputed here from r
  // rather than stored and streamed back). AVX-512 (when built for it), then AVX2, then a
  // scalar tail. t and shared are per element, or (null) one value t_all / shared_all for the
  // whole vector (a row: no arrays to fill and stream).
  //
  // With `cache`, the same pass also writes the kernel's exact float copy of the row and its
  // nonzero-nibble counts (per column, incremented, and the row's total), while the values are
  // in registers: the weights' caches (what CacheRow computes) or the operand data of a
  // Multiply (kernels::DcimProblem::x_f32, x_nz).
  struct RowCache {
    float* f32 = nullptr;      // n floats
    int32_t* col_nz = nullptr;  // nibbles x n, incremented
    int64_t* row_nz = nullptr;  // nibble d's count at row_nz[d * row_stride]
    int64_t row_stride = 0;
    int nibbles = 0;
  };
  void AlignFast(int64_t n, const uint32_t* r, const int32_t* o,
                 const int32_t* t, int32_t t_all, const int32_t* shared, int32_t shared_all,
                 int bits, const FastFormat& ff, int32_t* out, fp::AlignCounts& c,
                 const RowCache* cache = nullptr) const {
    const int pw = cache != nullptr ? cache->nibbles : 0;
    int64_t row_nz[4] = {0, 0, 0, 0};  // at most 4 nibbles (16 bits)
    const int32_t max_mag = (int32_t{1} << (bits - 1)) - 1;
    const bool nearest = align_rounding_ == fp::AlignRounding::kNearestEven;
    const int32_t lost_cap = ff.man + 1, bias = ff.man + 2 - bits;
    int64_t shifts = 0, lost = 0, sat = 0, i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
    {
      // The AVX2 loop below, 16 lanes at a time with mask registers in place of the blends
      // (the same integer operations, so the same values and counts).
      const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
      const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF), hidden = _mm512_set1_epi32(0x800000);
      const __m512i man_mask = _mm512_set1_epi32(0x7FFFFF), v127 = _mm512_set1_epi32(127);
      const __m512i v23 = _mm512_set1_epi32(23), v31 = _mm512_set1_epi32(31);
      const __m512i vmax = _mm512_set1_epi32(max_mag), vover = _mm512_set1_epi32(max_mag + 1);
      const __m512i vcap = _mm512_set1_epi32(lost_cap), vbias = _mm512_set1_epi32(bias);
      const __m512i vt_all = _mm512_set1_epi32(t_all), vsh_all = _mm512_set1_epi32(shared_all);
      const __m512i vemin = _mm512_set1_epi32(ff.emin), v15 = _mm512_set1_epi32(15);
      __m512i vshifts = zero, vlost = zero, vsat = zero;
      __m512i vnz0 = zero, vnz1 = zero, vnz2 = zero, vnz3 = zero;  // nonzero nibbles (cache)
      for (; i + 16 <= n; i += 16) {
        const __m512i ri = _mm512_loadu_si512(r + i);
        const __m512i q = _mm512_and_si512(ri, abs_mask);
        const __m512i ef = _mm512_srli_epi32(q, 23);
        const __m512i fm = _mm512_and_si512(q, man_mask);
        const __m512i f = _mm512_mask_or_epi32(fm, _mm512_test_epi32_mask(ef, ef), fm, hidden);
        const __m512i efu = _mm512_sub_epi32(_mm512_max_epi32(ef, one), v127);
        __m512i ex = _mm512_max_epi32(efu, vemin);
        __m512i rsh = _mm512_sub_epi32(t != nullptr ? _mm512_loadu_si512(t + i) : vt_all, efu);
        if (o != nullptr) {
          const __m512i oi = _mm512_loadu_si512(o + i);
          ex = _mm512_add_epi32(ex, oi);
          rsh = _mm512_sub_epi32(rsh, oi);
        }
        rsh = _mm512_add_epi32(rsh, v23);
        const __m512i sh = _mm512_max_epi32(_mm512_min_epi32(rsh, v31), one);
        __m512i a = _mm512_srlv_epi32(f, sh);
        if (nearest) {
          const __m512i sh1 = _mm512_sub_epi32(sh, one);
          const __m512i guard = _mm512_and_si512(_mm512_srlv_epi32(f, sh1), one);
          const __m512i below = _mm512_sub_epi32(_mm512_sllv_epi32(one, sh1), one);
          const __mmask16 sticky = _mm512_test_epi32_mask(f, below);
          const __m512i odd_or_sticky =
              _mm512_mask_mov_epi32(_mm512_and_si512(a, one), sticky, one);
          a = _mm512_add_epi32(a, _mm512_and_si512(guard, odd_or_sticky));
        }
        // rsh <= 0: above a layer-wise exponent, saturates (0 stays 0).
        const __mmask16 left = _mm512_cmplt_epi32_mask(rsh, one);
        a = _mm512_mask_mov_epi32(a, left,
                                  _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(f, f), vover));
        vsat = _mm512_mask_add_epi32(vsat, _mm512_cmpgt_epi32_mask(a, vmax), vsat, one);
        a = _mm512_min_epi32(a, vmax);
        const __m512i neg = _mm512_srai_epi32(ri, 31);
        const __m512i signed_a = _mm512_sub_epi32(_mm512_xor_si512(a, neg), neg);
        _mm512_storeu_si512(out + i, signed_a);
        const __mmask16 nz = _mm512_test_epi32_mask(q, q);
        const __m512i si = _mm512_add_epi32(
            _mm512_sub_epi32(shared != nullptr ? _mm512_loadu_si512(shared + i) : vsh_all, ex),
            vbias);
        vshifts = _mm512_mask_add_epi32(vshifts, nz & _mm512_test_epi32_mask(si, si), vshifts,
                                        one);
        vlost = _mm512_mask_add_epi32(vlost, nz, vlost,
                                      _mm512_min_epi32(_mm512_max_epi32(si, zero), vcap));
        if (cache != nullptr) {
          _mm512_storeu_ps(cache->f32 + i, _mm512_cvtepi32_ps(signed_a));
          // Named accumulators (not an array indexed in a loop) so they stay in registers.
          auto count = [&](int d, __m512i& acc) {
            // kernels::Nibble: low nibbles unsigned, the top one arithmetic.
            const __m128i shd = _mm_cvtsi32_si128(4 * d);
            const __m512i nib = d == pw - 1
                                    ? _mm512_sra_epi32(signed_a, shd)
                                    : _mm512_and_si512(_mm512_srl_epi32(signed_a, shd), v15);
            const __mmask16 nzd = _mm512_test_epi32_mask(nib, nib);
            int32_t* cn = cache->col_nz + d * n + i;
            const __m512i c = _mm512_loadu_si512(cn);
            _mm512_storeu_si512(cn, _mm512_mask_add_epi32(c, nzd, c, one));
            acc = _mm512_mask_add_epi32(acc, nzd, acc, one);
          };
          count(0, vnz0);
          if (pw > 1) count(1, vnz1);
          if (pw > 2) count(2, vnz2);
          if (pw > 3) count(3, vnz3);
        }
      }
      shifts += SumLanes(vshifts);
      lost += SumLanes(vlost);
      sat += SumLanes(vsat);
      const __m512i vnz[4] = {vnz0, vnz1, vnz2, vnz3};
      for (int d = 0; d < pw; ++d) row_nz[d] += SumLanes(vnz[d]);
    }
#endif
    {
      const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), one = _mm256_set1_epi32(1);
      const __m256i zero = _mm256_setzero_si256(), hidden = _mm256_set1_epi32(0x800000);
      const __m256i man_mask = _mm256_set1_epi32(0x7FFFFF), v127 = _mm256_set1_epi32(127);
      const __m256i v23 = _mm256_set1_epi32(23), v31 = _mm256_set1_epi32(31);
      const __m256i vmax = _mm256_set1_epi32(max_mag), vover = _mm256_set1_epi32(max_mag + 1);
      const __m256i vcap = _mm256_set1_epi32(lost_cap), vbias = _mm256_set1_epi32(bias);
      __m256i vshifts = zero, vlost = zero, vsat = zero;
      __m256i vzeros[4] = {zero, zero, zero, zero};  // zero nibbles per lane (cache)
      const int64_t avx2_start = i;
      const __m256i vt_all = _mm256_set1_epi32(t_all), vsh_all = _mm256_set1_epi32(shared_all);
      const __m256i vemin = _mm256_set1_epi32(ff.emin);
      for (; i + 8 <= n; i += 8) {
        const __m256i ri = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + i));
        const __m256i q = _mm256_and_si256(ri, abs_mask);
        const __m256i ef = _mm256_srli_epi32(q, 23);
        const __m256i ef_zero = _mm256_cmpeq_epi32(ef, zero);
        const __m256i f =
            _mm256_or_si256(_mm256_and_si256(q, man_mask), _mm256_andnot_si256(ef_zero, hidden));
        const __m256i efu = _mm256_sub_epi32(_mm256_max_epi32(ef, one), v127);
        __m256i ex = _mm256_max_epi32(efu, vemin);  // RoundFast's e: the format exponent + o
        if (o != nullptr) {
          ex = _mm256_add_epi32(ex, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o + i)));
        }
        const __m256i ti =
            t != nullptr ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + i)) : vt_all;
        __m256i rsh = _mm256_sub_epi32(ti, efu);
        if (o != nullptr) {
          rsh = _mm256_sub_epi32(rsh, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o + i)));
        }
        rsh = _mm256_add_epi32(rsh, v23);
        const __m256i sh = _mm256_max_epi32(_mm256_min_epi32(rsh, v31), one);
        __m256i a = _mm256_srlv_epi32(f, sh);
        if (nearest) {
          const __m256i sh1 = _mm256_sub_epi32(sh, one);
          const __m256i guard = _mm256_and_si256(_mm256_srlv_epi32(f, sh1), one);
          const __m256i below = _mm256_sub_epi32(_mm256_sllv_epi32(one, sh1), one);
          const __m256i sticky = _mm256_andnot_si256(
              _mm256_cmpeq_epi32(_mm256_and_si256(f, below), zero), one);
          a = _mm256_add_epi32(
              a, _mm256_and_si256(guard, _mm256_or_si256(sticky, _mm256_and_si256(a, one))));
        }
        const __m256i f_zero = _mm256_cmpeq_epi32(f, zero);
        const __m256i left = _mm256_cmpgt_epi32(one, rsh);  // rsh <= 0
        a = _mm256_blendv_epi8(a, _mm256_andnot_si256(f_zero, vover), left);
        const __m256i over = _mm256_cmpgt_epi32(a, vmax);
        vsat = _mm256_sub_epi32(vsat, over);
        a = _mm256_min_epi32(a, vmax);
        const __m256i neg = _mm256_srai_epi32(ri, 31);
        const __m256i signed_a = _mm256_sub_epi32(_mm256_xor_si256(a, neg), neg);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), signed_a);
        if (cache != nullptr) {
          _mm256_storeu_ps(cache->f32 + i, _mm256_cvtepi32_ps(signed_a));
          // Unrolled over the (at most 4) nibbles so the counters stay in registers.
#pragma GCC unroll 4
          for (int d = 0; d < 4; ++d) {
            if (d >= pw) break;
            // kernels::Nibble: low nibbles unsigned, the top one arithmetic.
            const __m128i sh = _mm_cvtsi32_si128(4 * d);
            const __m256i nib = d == pw - 1 ? _mm256_sra_epi32(signed_a, sh)
                                            : _mm256_and_si256(_mm256_srl_epi32(signed_a, sh),
                                                               _mm256_set1_epi32(15));
            const __m256i is_zero = _mm256_cmpeq_epi32(nib, zero);  // -1 where zero
            __m256i* cn = reinterpret_cast<__m256i*>(cache->col_nz + d * n + i);
            // +1 where nonzero: add 1, then add the -1 of the zero lanes.
            _mm256_storeu_si256(
                cn, _mm256_add_epi32(_mm256_loadu_si256(cn), _mm256_add_epi32(one, is_zero)));
            vzeros[d] = _mm256_sub_epi32(vzeros[d], is_zero);
          }
        }
        const __m256i nz = _mm256_andnot_si256(_mm256_cmpeq_epi32(q, zero), _mm256_set1_epi32(-1));
        const __m256i si = _mm256_add_epi32(
            _mm256_sub_epi32(
                shared != nullptr ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(shared + i))
                                  : vsh_all,
                ex),
            vbias);
        vshifts = _mm256_sub_epi32(
            vshifts, _mm256_andnot_si256(_mm256_cmpeq_epi32(si, zero), nz));
        vlost = _mm256_add_epi32(
            vlost, _mm256_and_si256(nz, _mm256_min_epi32(_mm256_max_epi32(si, zero), vcap)));
      }
      alignas(32) int32_t l1[8], l2[8], l3[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(l1), vshifts);
      _mm256_store_si256(reinterpret_cast<__m256i*>(l2), vlost);
      _mm256_store_si256(reinterpret_cast<__m256i*>(l3), vsat);
      for (int j = 0; j < 8; ++j) {
        shifts += l1[j];
        lost += l2[j];
        sat += l3[j];
      }
      for (int d = 0; d < pw; ++d) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(l1), vzeros[d]);
        int64_t zeros = 0;
        for (int j = 0; j < 8; ++j) zeros += l1[j];
        row_nz[d] += (i - avx2_start) - zeros;
      }
    }
    for (; i < n; ++i) {
      const uint32_t q = r[i] & 0x7FFFFFFFu;
      const int32_t ef = static_cast<int32_t>(q >> 23);
      const int32_t f = static_cast<int32_t>((q & 0x7FFFFFu) | (ef != 0 ? 0x800000u : 0u));
      const int32_t efu = std::max(ef, 1) - 127;
      const int32_t rsh = (t ? t[i] : t_all) - (o ? o[i] : 0) - efu + 23;
      const int32_t sh = std::max(std::min(rsh, 31), 1);
      int32_t a = f >> sh;
      if (nearest) {
        const int32_t guard = (f >> (sh - 1)) & 1;
        const int32_t sticky = (f & ((int32_t{1} << (sh - 1)) - 1)) != 0;
        a += guard & (sticky | (a & 1));
      }
      if (rsh <= 0) a = f != 0 ? max_mag + 1 : 0;  // above a layer-wise exponent: saturates
      const int32_t over = a > max_mag;
      sat += over;
      a = over ? max_mag : a;
      out[i] = (r[i] >> 31) ? -a : a;
      if (cache != nullptr) {
        cache->f32[i] = static_cast<float>(out[i]);
        for (int d = 0; d < pw; ++d) {
          const int32_t nz = kernels::Nibble(out[i], d, pw) != 0;
          cache->col_nz[d * n + i] += nz;
          row_nz[d] += nz;
        }
      }
      if (q != 0) {
        const int32_t ei = std::max(efu, ff.emin) + (o ? o[i] : 0);
        const int32_t si = (shared ? shared[i] : shared_all) - ei + bias;
        shifts += si != 0;
        lost += std::min(std::max(si, 0), lost_cap);
      }
    }
    c.alignment_shifts += shifts;
    c.shifted_out_bits += lost;
    c.saturated += sat;
    for (int d = 0; d < pw; ++d) cache->row_nz[d * cache->row_stride] = row_nz[d];
  }

  // The fast path of Align (nearest-even encoding of a floating-point format): vectors are the
  // rows of v (by_rows, offsets o per column) or its columns (weights, no offsets); the result
  // is written in v's layout (rows x cols, row-major) with one LSB exponent per vector.
  // caches (columns only; out must be aw_): fill the kernel's weight caches (PrepareCaches
  // called before) in the align pass. f32 and col_nz_out (rows only): the kernel's float copy of
  // the result (rows x cols) and its nonzero-nibble counts per column (nibbles x cols, added to).
  void AlignFastMatrix(ConstMatrixView v, bool by_rows, const OperandSpec& spec, int s,
                       const int* o, bool layer, int layer_exp, int32_t* out, int* exps,
                       fp::AlignCounts& counts, ThreadPool* pool, bool caches = false,
                       float* f32 = nullptr, int64_t* col_nz_out = nullptr) {
    const FastFormat ff = MakeFastFormat(spec.format);
    const int64_t rows = v.rows, cols = v.cols;
    uint32_t* r = round_bits_.Get(rows * cols);
    std::mutex mu;
    auto chunks = [&](auto fn) {
      // Chunks of at least 2^19 elements: the encode and align cost about a nanosecond per
      // element, and waking the pool's workers costs more than a smaller chunk saves.
      const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 19) / std::max<int64_t>(1, cols));
      if (pool != nullptr) {
        pool->ParallelFor(rows, grain, fn);
      } else {
        fn(0, rows);
      }
    };
    const int32_t kNone = kNoExp;
    auto exponent_of = [&](int32_t emax) { return emax == kNone ? 0 : emax; };  // all zero
    if (by_rows) {
      // With f32 and col_nz_out (the fast kernel's operand data, kernels::DcimProblem::x_f32
      // and x_nz), the align pass also writes the exact float copy of each row and counts the
      // nonzero nibbles per column, sparing the kernel two passes over the aligned integers.
      const int px = kernels::NumNibbles(spec.bits);
      const bool fused = f32 != nullptr && col_nz_out != nullptr && px <= 4;
      chunks([&](int64_t r0, int64_t r1) {
        fp::AlignCounts local;
        std::vector<int32_t> col_nz(static_cast<size_t>(fused ? px * cols : 0), 0);
        int64_t row_nz[4];  // per-row counts: unused here
        for (int64_t i = r0; i < r1; ++i) {
          uint32_t* ri = r + i * cols;
          int32_t emax = kNone;
          RoundFast(v.Row(i), cols, s, spec.format, ff, o, ri, nullptr, layer ? nullptr : &emax);
          const int32_t shared = layer ? layer_exp : exponent_of(emax);
          exps[i] = shared - (spec.bits - 2);
          RowCache rc;
          if (fused) {
            rc.f32 = f32 + i * cols;
            rc.col_nz = col_nz.data();
            rc.row_nz = row_nz;
            rc.row_stride = 1;
            rc.nibbles = px;
          }
          AlignFast(cols, ri, o, nullptr, exps[i], nullptr, shared, spec.bits, ff,
                    out + i * cols, local, fused ? &rc : nullptr);
          local.exponent_compares += cols;
        }
        std::lock_guard<std::mutex> lock(mu);
        counts += local;
        // Integer sums: the same totals whatever the split.
        for (size_t j = 0; j < col_nz.size(); ++j) col_nz_out[j] += col_nz[j];
      });
      return;
    }
    // Columns: round everything while taking each column's maximum exponent (per chunk, then
    // merged: max is order-free, so the result does not depend on the split), then align row
    // by row.
    std::vector<int32_t> shared(static_cast<size_t>(cols), kNone), t(static_cast<size_t>(cols));
    chunks([&](int64_t r0, int64_t r1) {
      std::vector<int32_t> local(static_cast<size_t>(layer ? 0 : cols), kNone);
      for (int64_t i = r0; i < r1; ++i) {
        RoundFast(v.Row(i), cols, s, spec.format, ff, nullptr, r + i * cols, nullptr,
                  nullptr, layer ? nullptr : local.data());
      }
      if (layer) return;
      std::lock_guard<std::mutex> lock(mu);
      for (int64_t j = 0; j < cols; ++j) shared[j] = std::max(shared[j], local[j]);
    });
    if (layer) {
      std::fill(shared.begin(), shared.end(), layer_exp);
    } else {
      for (int32_t& x : shared) x = exponent_of(x);
    }
    for (int64_t j = 0; j < cols; ++j) {
      t[j] = shared[j] - (spec.bits - 2);
      exps[j] = t[j];
    }
    counts.exponent_compares += rows * cols;
    const int pw = kernels::NumNibbles(spec.bits);
    chunks([&](int64_t r0, int64_t r1) {
      fp::AlignCounts local;
      std::vector<int32_t> col_nz(static_cast<size_t>(caches ? pw * cols : 0), 0);
      // Float copies (the usual case) come out of AlignFast itself; doubles from CacheRow.
      const bool fused = caches && !cache_f64_ && pw <= 4;
      for (int64_t i = r0; i < r1; ++i) {
        RowCache rc;
        if (fused) {
          rc.f32 = w_f32_.data() + i * cols;
          rc.col_nz = col_nz.data();
          rc.row_nz = fwd_cache_.nz.data() + i;
          rc.row_stride = rows;
          rc.nibbles = pw;
        }
        AlignFast(cols, r + i * cols, nullptr, t.data(), 0, shared.data(), 0, spec.bits, ff,
                  out + i * cols, local, fused ? &rc : nullptr);
        if (caches && !fused) CacheRow(i, col_nz.data());
      }
      std::lock_guard<std::mutex> lock(mu);
      counts += local;
      // Integer sums: the same totals whatever the split.
      for (size_t j = 0; j < col_nz.size(); ++j) bwd_cache_.nz[j] += col_nz[j];
    });
  }

  // The fast kernel's per-direction weight data (kernels::DcimWeightCache), from aw_ in one
  // pass: exact float (or double) copies of W (forward, rows x cols) and S = W^T (BP), and the
  // nonzero-nibble counts along each direction's outputs.
  // Split in three so the fast path can fill the caches row by row while aligning
  // (AlignFastMatrix, caches): PrepareCaches sizes them, CacheRow adds row r of aw_ (its
  // nonzero-nibble counts, with the per-column counts into col_nz, and its exact float or
  // double copy).
  void BuildCaches() {
    PrepareCaches();
    const int pw = kernels::NumNibbles(weight_.bits);
    std::vector<int32_t> col_nz(static_cast<size_t>(pw * cols_), 0);
    for (int64_t r = 0; r < rows_; ++r) CacheRow(r, col_nz.data());
    for (size_t i = 0; i < col_nz.size(); ++i) bwd_cache_.nz[i] = col_nz[i];
  }

  void PrepareCaches() {
    const int pw = kernels::NumNibbles(weight_.bits);
    fwd_cache_.nz.assign(static_cast<size_t>(pw * rows_), 0);
    bwd_cache_.nz.assign(static_cast<size_t>(pw * cols_), 0);
    // One exact copy of W (rows x cols) serves both directions: BP reads it transposed.
    const bool f_fwd = kernels::DcimUsesFloat(input_.bits, weight_.bits, rows_);
    const bool f_bwd = kernels::DcimUsesFloat(error_.bits, weight_.bits, cols_);
    const size_t size = static_cast<size_t>(rows_ * cols_);
    if (f_fwd || f_bwd) w_f32_.resize(size);
    if (!f_fwd || !f_bwd) w_f64_.resize(size);
    cache_f32_ = f_fwd || f_bwd;
    cache_f64_ = !f_fwd || !f_bwd;
    fwd_cache_.f32 = f_fwd ? w_f32_.data() : nullptr;
    fwd_cache_.f64 = f_fwd ? nullptr : w_f64_.data();
    fwd_cache_.transposed = false;
    bwd_cache_.f32 = f_bwd ? w_f32_.data() : nullptr;
    bwd_cache_.f64 = f_bwd ? nullptr : w_f64_.data();
    bwd_cache_.transposed = true;
  }

  void CacheRow(int64_t r, int32_t* col_nz) {
    const int pw = kernels::NumNibbles(weight_.bits);
    const int32_t* row = aw_.data() + r * cols_;
    for (int d = 0; d < pw; ++d) {
      // Nibble d of each weight (see kernels::Nibble), branch-free so the loop vectorizes.
      const int sh = 4 * d;
      const int32_t mask = d == pw - 1 ? -1 : 15;
      int32_t* cn = col_nz + d * cols_;
      int32_t count = 0;
      for (int64_t c = 0; c < cols_; ++c) {
        const int32_t nz = ((row[c] >> sh) & mask) != 0;
        count += nz;
        cn[c] += nz;
      }
      fwd_cache_.nz[d * rows_ + r] = count;
    }
    if (cache_f32_) {
      float* dst = w_f32_.data() + r * cols_;
      for (int64_t c = 0; c < cols_; ++c) dst[c] = static_cast<float>(row[c]);
    }
    if (cache_f64_) {
      double* dst = w_f64_.data() + r * cols_;
      for (int64_t c = 0; c < cols_; ++c) dst[c] = row[c];
    }
  }

  // Ref path: the weight operand of a direction as the port delivers it. Forward: row u of
  // block (bj, bi) is S[bj n + u][.] rotated by u, and the input segment rotated by u meets it,
  // so element v of the logical row is at port position (v + u) mod n. Backward: diagonal v of
  // block (bj, bi) is S[.][bi n + v] rotated by v, met by the error segment rotated by v.
  // Returns the k x n operand of the kernel (forward: W = S^T, backward: S).
  // Counts the reads and the nonzero rotations it performs (once per sample on the chip).
  std::vector<int32_t> ReadThroughPort(bool fwd, int64_t* reads, int64_t* rotations) const {
    const int64_t n = per_read_;
    std::vector<int32_t> port(static_cast<size_t>(n)), idx(static_cast<size_t>(n)),
        rot(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) idx[t] = static_cast<int32_t>(t);
    if (fwd) {
      std::vector<int32_t> w(static_cast<size_t>(rows_ * cols_));  // rows x cols
      for (int64_t j = 0; j < cols_; ++j) {
        for (int64_t bi = 0; bi * n < rows_; ++bi) {
          const int64_t u = j % n;
          store_.ReadRow(j / n, bi, u, port.data());
          ++*reads;
          kernels::CyclicArray::Rotate(idx.data(), n, u, rot.data());  // where x[v] lands
          *rotations += u != 0;
          for (int64_t p = 0; p < n; ++p) {
            const int64_t r = bi * n + rot[p];
            if (r < rows_) w[r * cols_ + j] = port[p];
          }
        }
      }
      return w;
    }
    std::vector<int32_t> s(static_cast<size_t>(cols_ * rows_));  // cols x rows
    for (int64_t i = 0; i < rows_; ++i) {
      for (int64_t bj = 0; bj * n < cols_; ++bj) {
        const int64_t v = i % n;
        store_.ReadDiagonal(bj, i / n, v, port.data());
        ++*reads;
        kernels::CyclicArray::Rotate(idx.data(), n, v, rot.data());  // where e[u] lands
        *rotations += v != 0;
        for (int64_t p = 0; p < n; ++p) {
          const int64_t j = bj * n + rot[p];
          if (j < cols_) s[j * rows_ + i] = port[p];
        }
      }
    }
    return s;
  }

  // Port, rotator and multiplier-input events of one Multiply (docs/fp_digital.md, "Counting
  // model"). The macro computes one pass per access: a pass is (sample, output, reduction block
  // of tree_inputs elements, input nibble, weight nibble), and its 64 multipliers take one
  // 4-bit weight nibble each, read through the port in that access (4 kb bits: one 256-bit read
  // for a full block), and one input nibble each from the rotated segment. So an 8-bit operand
  // costs its four nibble passes four reads, four rotations and four input loads, not the one
  // read of its 8-bit cells a layout walk would suggest; each segment is loaded from the input
  // buffer once per block of n_p outputs.
  void PortCounts(int64_t m, int64_t k, int64_t n_out, int x_bits, ActionCounts& counts) const {
    const int64_t np = per_read_, oblocks = (n_out + np - 1) / np;
    const int64_t pairs = kernels::NumNibbles(x_bits) * kernels::NumNibbles(weight_.bits);
    int64_t reads_per_output = 0;  // port reads of one output's passes
    for (int64_t r0 = 0; r0 < k; r0 += tree_inputs_) {
      const int64_t kb = std::min(tree_inputs_, k - r0);
      reads_per_output += (4 * kb + port_bits_ - 1) / port_bits_ * pairs;
    }
    counts.Add("array_row_reads", m * n_out * reads_per_output);  // rows FP, diagonals BP
    counts.Add("rotations", m * (n_out - oblocks) * reads_per_output);  // offset 0 needs none
    counts.Add("multiplier_input_loads", m * n_out * k * pairs);
    BufferCounts(m, k, n_out, counts);
  }

  void BufferCounts(int64_t m, int64_t k, int64_t n_out, ActionCounts& counts) const {
    const int64_t oblocks = (n_out + per_read_ - 1) / per_read_;
    counts.Add("input_buffer_reads", m * k * oblocks);
    counts.Add("output_buffer_writes", m * n_out);
  }

  MacroSpec spec_;
  OperandSpec input_, weight_, error_;
  fp::Format out_format_ = fp::Format::kBF16;
  AlignMode align_mode_ = AlignMode::kVector;
  fp::AlignRounding align_rounding_ = fp::AlignRounding::kTruncate;
  bool tensor_scaling_ = true;
  kernels::DcimApprox approx_;
  bool gc_in_format_ = true;
  KernelChoice kernel_ = KernelChoice::kFast;
  int64_t port_bits_ = 256, tree_inputs_ = 64, cell_bits_ = 8, per_read_ = 32;

  int64_t rows_ = 0, cols_ = 0;
  int64_t align_block_ = 0;    // elements per shared exponent (0: the whole vector)
  ConfigNode tile_config_;     // align_block > 0: the tiles' parameters
  std::vector<std::unique_ptr<FpDigitalMacro>> tiles_;  // row blocks x column blocks
  bool gc_on_macro_ = false;    // gradient_path: macro
  std::vector<int32_t> aw_;    // rows x cols aligned weight mantissas (W)
  std::vector<int32_t> aw_t_;  // ref: cols x rows, the stored matrix S = W^T
  std::vector<int> wexp_;      // per column of W: the LSB exponent (tensor scale included)
  kernels::CyclicArray store_;  // ref: the physical, cyclically mapped array
  kernels::DcimWeightCache fwd_cache_, bwd_cache_;  // fast: per-direction weight data
  std::vector<float> w_f32_;   // fast: W as exact floats (rows x cols)
  std::vector<double> w_f64_;  // fast: W as doubles, for widths float cannot sum exactly
  bool cache_f32_ = false, cache_f64_ = false;  // which of the two copies are in use
  // Fast-path scratch, grown on demand without zeroing.
  Aligned aligned_;                     // Multiply's aligned operand
  std::vector<float> gc_x_, gc_dy_;     // GradientCalc's rounded operands
  std::vector<float> x_f32_;            // Multiply's aligned operand as exact floats
  std::vector<int64_t> x_nz_;           // and its nonzero-nibble counts per element column
  mutable Scratch<uint32_t> round_bits_;
};

PIM_REGISTER(Macro, FpDigitalMacro, "fp_digital",
             "ISSCC'25 14.5 floating-point digital CIM: pre-aligned mantissas, 4b multipliers, "
             "cyclic-mapping transpose, accurate/approximate MAC");

}  // namespace
}  // namespace pim
