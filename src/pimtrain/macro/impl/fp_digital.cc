// fp_digital: the floating-point digital SRAM CIM macro of ISSCC 2025 14.5 (Yuan et al.,
// IME-CAS, "A 28nm 192.3TFLOPS/W Accurate/Approximate Dual-Mode-Transpose Digital 6T-SRAM CIM
// Macro for Floating-Point Edge Training and Inference"). Inputs, errors and weights are
// encoded to a number format, pre-aligned per vector (or per tensor) to signed fixed-point
// mantissas, multiplied on the nibble datapath (kernels/fp_dcim.h) and renormalized to the
// output format. Weights live in a cyclically mapped array read by rows (FP) and diagonals
// (BP). GC and WU run outside the macro in FP32 with FP32 master weights, as the chip's
// training system does. docs/fp_digital.md.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/base/scratch.h"
#include "pimtrain/kernels/bitserial_quantize.h"
#include "pimtrain/kernels/fp_dcim.h"
#include "pimtrain/kernels/fp_dcim_encode.h"
#include "pimtrain/kernels/gemm.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/numerics/fixed_point.h"
#include "pimtrain/numerics/formats.h"
#include "pimtrain/numerics/prealign.h"

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

// How one operand tensor is quantized: its format, aligned width and rounding.
struct OperandSpec {
  fp::Format format = fp::Format::kBF16;
  int bits = 8;
  Rounding rounding = Rounding::kNearestEven;
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
    fp::AlignCounts ac;
    const float max_abs = NeedsMaxAbs(weight_) ? MaxAbs(w) : 0.0f;
    const int s = ScaleExponent(weight_.format, max_abs);
    const kernels::EncodeSpec es = Encoding(weight_, s, max_abs);
    aw_.resize(static_cast<size_t>(rows_ * cols_));
    if (FastPath(weight_)) {
      wexp_.resize(static_cast<size_t>(cols_));
      // The kernel's weight caches are filled row by row as the rows are aligned, while each
      // row is still in cache, instead of in a second pass over aw_.
      PrepareCaches();
      kernels::fast::EncodeAlignMatrix(w, /*by_rows=*/false, es, nullptr, aw_.data(),
                                       wexp_.data(), ac, ctx.pool, CacheSides(),
                                       round_bits_.Get(rows_ * cols_));
    } else {
      // The weight vectors are W's columns (one per output): vector c, element r at (r, c).
      const kernels::EncodeVectors v{w.data, cols_, rows_, 1, w.ld, 1, cols_, nullptr};
      aw_t_.resize(static_cast<size_t>(rows_ * cols_));
      wexp_.resize(static_cast<size_t>(cols_));
      kernels::ref::EncodeAlign(v, es, Rng(ctx, kStreamWeight), aw_t_.data(), wexp_.data(), ac,
                                ctx.pool);
      // Vector-major = cols x rows = S, the stored matrix; aw_ is W's layout.
      for (int64_t c = 0; c < cols_; ++c) {
        for (int64_t r = 0; r < rows_; ++r) aw_[r * cols_ + c] = aw_t_[c * rows_ + r];
      }
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
                          : NeedsMaxAbs(spec)    ? MaxAbs(x)
                                                 : 0.0f;
    const int s = ScaleExponent(spec.format, max_abs);
    fp::AlignCounts ac;
    // BP with per-column weight exponents: e_j W_ij = (e_j 2^(wexp_j)) a_ij, so the column
    // exponents are added to the errors' exponents before their alignment; with one weight
    // exponent (layer-wise) it scales the outputs instead.
    const bool fold = !fwd && align_mode_ == AlignMode::kVector;
    Aligned& al = aligned_;  // kept between calls (no page faults on every batch)
    bool fused_x = false;  // x_f32_ and x_nz_ hold the kernel's operand data
    const kernels::EncodeSpec es = Encoding(spec, s, max_abs);
    const int* offsets = fold ? wexp_.data() : nullptr;
    al.a.resize(static_cast<size_t>(m * k));
    al.exp.resize(static_cast<size_t>(m));
    if (FastPath(spec)) {
      // The kernel's float operand and nibble counts come out of the align pass when the
      // kernel will multiply in float (kernels::DcimUsesFloat) in accurate mode.
      fused_x = !approx_.enabled &&
                kernels::DcimUsesFloat(spec.bits, weight_.bits, k) &&
                kernels::NumNibbles(spec.bits) <= 4;
      if (fused_x) {
        x_f32_.resize(static_cast<size_t>(m * k));
        x_nz_.assign(static_cast<size_t>(kernels::NumNibbles(spec.bits) * k), 0);
      }
      kernels::EncodeSideOutputs side;
      if (fused_x) {
        side.f32 = x_f32_.data();
        side.col_nz = x_nz_.data();
      }
      kernels::fast::EncodeAlignMatrix(x, /*by_rows=*/true, es, offsets, al.a.data(),
                                       al.exp.data(), ac, ctx.pool, side,
                                       round_bits_.Get(m * k));
    } else {
      const kernels::EncodeVectors v{x.data, m, k, x.ld, 1, k, 1, offsets};
      kernels::ref::EncodeAlign(v, es, Rng(ctx, fwd ? kStreamInput : kStreamError), al.a.data(),
                                al.exp.data(), ac, ctx.pool);
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
    if (base.input_max_abs < 0) base.input_max_abs = MaxAbs(x);
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
    const float max_abs = scaled ? MaxAbs(v) : 0.0f;
    int e = 0;
    if (fp::IsInt(f)) {
      e = PowerOfTwoExponent(max_abs, fp::Info(f).bits, Signedness::kSigned);
    } else {
      e = -ScaleExponent(f, max_abs);
    }
    // The rounded value times 2^e: one float multiply by a power of two when 2^e is a normal
    // float, the same single rounding as the double product.
    const bool fast = kernel_ == KernelChoice::kFast && !fp::IsInt(f);
    std::vector<float> q(static_cast<size_t>(v.cols));
    const float scale = std::ldexp(1.0f, e);
    const bool exact_scale = e > -126 && e < 127;
    for (int64_t r = 0; r < v.rows; ++r) {
      if (fast) {
        kernels::fast::RoundToFormat(v.Row(r), v.cols, -e, f,
                                     reinterpret_cast<uint32_t*>(q.data()));
      } else {
        kernels::ref::RoundToFormat(v.Row(r), v.cols, -e, f, q.data());
      }
      float* dst = out.data() + r * v.cols;
      for (int64_t c = 0; c < v.cols; ++c) {
        dst[c] = exact_scale ? q[c] * scale : static_cast<float>(std::ldexp(double{q[c]}, e));
      }
    }
  }

  // max |v| over the finite elements (the tensor scale's input).
  float MaxAbs(ConstMatrixView v) const {
    return kernel_ == KernelChoice::kRef ? kernels::ref::MaxForScale(v, Signedness::kSigned)
                                         : kernels::fast::MaxForScale(v, Signedness::kSigned);
  }

  // The encoding of one operand tensor scaled by 2^s whose largest |x| is max_abs.
  kernels::EncodeSpec Encoding(const OperandSpec& spec, int s, float max_abs) const {
    kernels::EncodeSpec es;
    es.format = spec.format;
    es.bits = spec.bits;
    es.rounding = spec.rounding;
    es.align_rounding = align_rounding_;
    es.scale_exp = s;
    es.layer = align_mode_ == AlignMode::kLayer;
    es.layer_exp = es.layer ? LayerExponent(spec, s, max_abs) : 0;
    return es;
  }

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

  // The fast kernel's per-direction weight data (kernels::DcimWeightCache): exact float (or
  // double) copies of W (forward, rows x cols; BP reads it transposed) and the nonzero-nibble
  // counts along each direction's outputs. PrepareCaches sizes them and CacheSides names them
  // for the encoder's side outputs (kernels::EncodeSideOutputs), which fill them in the align
  // pass; BuildCaches fills them from aw_ when the weights took the reference encoder.
  kernels::EncodeSideOutputs CacheSides() {
    kernels::EncodeSideOutputs side;
    side.f32 = cache_f32_ ? w_f32_.data() : nullptr;
    side.f64 = cache_f64_ ? w_f64_.data() : nullptr;
    side.col_nz = bwd_cache_.nz.data();
    side.row_nz = fwd_cache_.nz.data();
    return side;
  }

  void BuildCaches() {
    PrepareCaches();
    kernels::fast::EncodeSideOutputsOf(aw_.data(), rows_, cols_, weight_.bits, CacheSides());
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
