// analog_crossbar: an analog PIM crossbar (ISAAC / CASCADE / Neural-PIM / PIM-QAT's CAP-RAM) with
// DAC input cycles, weights sliced over 1..4-bit cells (offset column or differential pairs),
// per-column ADC read-out chains (dataflows A, B, C), noise and non-linearity, read in both
// directions. Equations and choices: docs/analog.md.
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
#include "pimtrain/device/array.h"
#include "pimtrain/device/device.h"
#include "pimtrain/device/drift.h"
#include "pimtrain/device/io.h"
#include "pimtrain/device/trainable.h"
#include "pimtrain/device/unit_cell.h"
#include "pimtrain/device/update.h"
#include "pimtrain/kernels/analog.h"
#include "pimtrain/kernels/gemm.h"
#include "pimtrain/macro/analog_config.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/numerics/adc.h"
#include "pimtrain/numerics/fixed_point.h"

namespace pim {
namespace {

PIM_DECLARE_COUNTERS(
    AnalogCrossbarCounters, "macro/analog_crossbar",
    {"weight_writes", "cell write", "WU", "cells written when the weights are programmed"},
    {"array_cells_allocated", "cell", "WU", "cells of the arrays the layout occupies (occupancy)"},
    {"array_cells_used", "cell", "WU", "cells holding weight bits (occupancy)"},
    {"digital_macs", "MAC", "FP BP GC CAL",
     "multiply-accumulates done in the digital periphery (GC; the ideal read-out's FP/BP)"},
    {"offset_corrections", "output", "FP BP",
     "outputs corrected for the offset encoding (a digital subtract of offset x sum(x))"},
    // Device mode (docs/devices.md): the pulsed in-array update and the io read path.
    {"device_pulses", "pulse", "WU", "programming pulses applied to cells (device update)"},
    {"device_cells_pulsed", "cell", "WU", "cells that received at least one pulse in an update"},
    {"device_pulse_slots", "slot", "WU",
     "pulse periods of an update (all firing lines of the arrays pulse in one slot)"},
    {"device_verify_reads", "cell read", "WU", "read-backs of write-verify (cell read + conversion)"},
    {"bm_repeats", "read", "FP BP", "reads repeated by bound management at a halved input scale"},
    {"transfer_reads", "read", "WU", "Tiki-Taka's one-hot reads of the fast array A"},
    {"digital_accumulations", "add", "WU",
     "digital accumulator adds (Tiki-Taka's hidden matrix H, mixed precision's chi)"},
    {"out_scale_multiplies", "multiply", "FP BP WU",
     "digital multiplies by a column's weight-mapping scale (pim.macro.mapping): forward "
     "outputs, transposed-read inputs, update errors"});

enum class KernelChoice { kFast, kRef };
enum class Encoding { kOffset, kDifferential };
enum class RangeMode { kFixed, kCalibrated };

constexpr uint64_t kStreamProgram = 11;

// The ADC full scale candidates of the calibration search: 2^(-i/2) of the largest partial sum.
constexpr int kCalibrationSteps = 24;
// Calibration looks at no more than this many rows of the call's input, spread evenly over it
// (row floor(i m / kCalibrationRows), i < kCalibrationRows, when the call has m > 256 rows), so a
// conv layer's im2col rows come from every image of the batch, not the top of the first one.
constexpr int64_t kCalibrationRows = 256;

Dataflow ParseDataflow(const std::string& s) {
  if (s == "B") return Dataflow::kB;
  if (s == "C") return Dataflow::kC;
  return Dataflow::kA;
}

// The largest finite |v[i]|, i < n: as the bit patterns of the magnitudes, which order like
// the floats (an integer max the compiler vectorizes; NaN and infinity are >= 0x7f800000).
float MaxFiniteAbs(const float* __restrict v, int64_t n) {
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = std::bit_cast<uint32_t>(v[i]) & 0x7fffffffu;
    m = std::max(m, u & (0u - static_cast<uint32_t>(u < 0x7f800000u)));
  }
  return std::bit_cast<float>(m);
}

// out[i] = clamp(round_half_even(v[i] inv), -top, top), NaN -> 0, in float (see below).
void QuantizeRowFloat(const float* __restrict v, int64_t n, float inv, float top,
                      int32_t* __restrict out) {
  for (int64_t i = 0; i < n; ++i) {
    const float t = std::nearbyint(v[i] * inv);
    const float c = std::min(std::max(t, -top), top);
    out[i] = t == t ? static_cast<int32_t>(c) : 0;
  }
}

// A tensor quantized to sign-magnitude integers |q| <= 2^bits - 1 with one power-of-two scale:
// q = clamp(round_half_even(v / 2^exp)); NaN -> 0. max_abs < 0: the largest finite |v|. Rows
// are split over `pool` (the maximum is the same in any order). In float when 2^-exp is a
// normal float: v 2^-exp is then exact in float as in double (or below 1/2 in both, or past the
// clamp in both), so the codes are those of the double arithmetic.
int QuantizeSignMagnitude(ConstMatrixView v, int bits, float max_abs, std::vector<int32_t>& q,
                          ThreadPool& pool) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, v.cols));
  if (max_abs < 0) {
    max_abs = 0;
    std::mutex mu;
    pool.ParallelFor(v.rows, grain, [&](int64_t r0, int64_t r1) {
      float m = 0;
      for (int64_t r = r0; r < r1; ++r) m = std::max(m, MaxFiniteAbs(v.Row(r), v.cols));
      std::lock_guard<std::mutex> lock(mu);
      max_abs = std::max(max_abs, m);
    });
  }
  const int exp = PowerOfTwoExponent(max_abs, bits + 1, Signedness::kSigned);
  const double inv = std::ldexp(1.0, -exp);
  const double top = std::ldexp(1.0, bits) - 1;
  const bool in_float = exp > -120 && exp < 120;
  const float inv_f = static_cast<float>(inv), top_f = static_cast<float>(top);
  q.resize(static_cast<size_t>(v.rows * v.cols));
  pool.ParallelFor(v.rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = v.Row(r);
      int32_t* out = q.data() + r * v.cols;
      if (in_float) {
        QuantizeRowFloat(row, v.cols, inv_f, top_f, out);
      } else {
        for (int64_t c = 0; c < v.cols; ++c) {
          double t = std::nearbyint(static_cast<double>(row[c]) * inv);
          t = t != t ? 0.0 : std::min(std::max(t, -top), top);
          out[c] = static_cast<int32_t>(t);
        }
      }
    }
  });
  return exp;
}

// One read direction's stored form and read-out chain.
struct Side {
  std::vector<int32_t> levels;     // k x (n * pol) levels, the kernel's w
  std::vector<float> conductance;  // programming variation, else empty
  kernels::fast::PackedAnalogWeights packed;
  int64_t k = 0, n = 0;  // reduction and outputs of this direction
  int64_t block = 128;   // reduction per array
  int64_t tile_cols = 128;
  int reads_per_cycle = 1;
};

class AnalogCrossbarMacro final : public Macro, public AnalogTunable, public AnalogTrainable {
 public:
  explicit AnalogCrossbarMacro(const ConfigNode& p) {
    spec_.rows = p.GetInt("rows");
    spec_.cols = p.GetInt("cols");
    spec_.arrays_per_core = p.GetInt("arrays_per_core");
    spec_.cores = p.GetInt("cores");
    spec_.input_bits = static_cast<int>(p.GetInt("input_bits"));
    const int64_t eb = p.GetInt("error_bits");
    spec_.error_bits = eb == 0 ? spec_.input_bits : static_cast<int>(eb);
    spec_.weight_bits = static_cast<int>(p.GetInt("weight_bits"));
    spec_.weight_bits_backward = spec_.weight_bits;
    spec_.gradient_bits = 32;  // GC is digital FP32
    spec_.master_weights = p.GetBool("master_weights");
    const std::string dec = p.GetString("decomposition");
    // Device mode (docs/devices.md): the weights live in pulsed devices, read through the
    // aihwkit-style io path and written by the update rule; one device per weight.
    device_ = std::shared_ptr<const Device>(Registry<Device>::Create(p.At("device")));
    update_ = Registry<UpdateRule>::Create(p.At("update"));
    CheckUnitCellUpdate(*device_, p.At("update"));  // a pair needs a pulsed update rule
    const ConfigNode* io_node = p.Find("io");
    const bool has_io = io_node != nullptr && !io_node->IsNull();
    if (has_io) io_ = ParseIo(p.At("io"));
    const ConfigNode* dep = p.Find("deployment");
    has_deployment_ = dep != nullptr && !dep->IsNull();
    if (has_deployment_) deployment_ = ParseDeployment(*dep);
    omega_ = p.At("mapping").GetDouble("weight_scaling_omega");
    columnwise_ = p.At("mapping").GetBool("weight_scaling_columnwise");
    device_mode_ = has_io || has_deployment_ || !device_->ideal() ||
                   p.At("update").GetString("impl") != "ideal";
    if (device_mode_ && dec != "native") {
      throw ConfigError(p.At("decomposition").Where() + ": " + dec +
                        " with a device / update / io block; the device path stores one device "
                        "per weight and needs decomposition: native");
    }
    if (omega_ > 0 && !device_mode_) {
      const ConfigNode& n = p.At("mapping").At("weight_scaling_omega");
      throw ConfigError(n.Where() + ": weight_scaling_omega maps weights onto device bounds "
                        "and needs device mode (a device, update or io block)");
    }
    encoding_ = p.GetString("weight_encoding") == "differential" ? Encoding::kDifferential
                                                                  : Encoding::kOffset;
    column_scale_ = p.GetString("weight_scale") == "column";
    mse_input_scale_ = p.GetString("input_scale") == "mse";
    gc_quantized_inputs_ = p.GetString("gradient_inputs") == "quantized";
    if (column_scale_ && device_mode_) {
      const ConfigNode& n = p.At("weight_scale");
      throw ConfigError(n.Where() + ": weight_scale: column quantizes the integer cell levels; "
                        "device mode maps weights with mapping.weight_scaling_columnwise");
    }
    dac_bits_ = static_cast<int>(p.GetInt("dac_bits"));
    cell_bits_ = static_cast<int>(p.GetInt("cell_bits"));
    const int bw = spec_.weight_bits;
    if (dec == "bit_serial") {
      dac_bits_ = 1;
      cell_bits_ = 1;
    } else if (dec == "native") {
      encoding_ = Encoding::kOffset;
      dac_bits_ = std::min(8, spec_.input_bits);
      cell_bits_ = bw;
    } else if (dec == "differential") {
      encoding_ = Encoding::kDifferential;
      dac_bits_ = std::min(8, spec_.input_bits);
      cell_bits_ = bw - 1;
    }
    if (device_mode_) cell_bits_ = std::clamp(cell_bits_, 1, 4);  // unused: analog devices
    if (cell_bits_ < 1 || cell_bits_ > 4) {
      const ConfigNode& n = p.At("decomposition");
      throw ConfigError(n.Where() + ": " + dec + " with weight_bits " + std::to_string(bw) +
                        " needs " + std::to_string(cell_bits_) +
                        "-bit cells; cells hold 1..4 bits (use bit_serial or custom)");
    }
    stored_bits_ = encoding_ == Encoding::kOffset ? bw : bw - 1;
    polarities_ = encoding_ == Encoding::kOffset ? 1 : 2;
    slices_ = (stored_bits_ + cell_bits_ - 1) / cell_bits_;
    dataflow_ = ParseDataflow(p.GetString("dataflow"));
    output_bits_ = static_cast<int>(p.GetInt("output_bits"));
    const ConfigNode& adc = p.At("adc");
    adc_bits_cfg_ = static_cast<int>(adc.GetInt("bits"));
    range_mode_ = adc.GetString("range") == "calibrated" ? RangeMode::kCalibrated
                                                         : RangeMode::kFixed;
    fs_fraction_ = adc.GetDouble("full_scale");
    calibrate_t_range_ = adc.GetString("transposed_range") == "calibrated";
    pending_t_calibration_ = calibrate_t_range_;
    follow_input_scale_ = adc.GetBool("follow_input_scale");
    inl_lsb_ = adc.GetDouble("inl_lsb");
    thermal_sigma_ = p.At("thermal_noise").GetDouble("sigma");
    sinad_db_ = p.At("sinad").GetDouble("db");
    program_sigma_ = p.At("programming_variation").GetDouble("sigma");
    nnsa_sigma_ = p.At("nnsa").GetDouble("sigma");
    readout_[0] = p.GetString("forward") == "ideal" ? Readout::kIdeal : Readout::kAnalog;
    readout_[1] = p.GetString("backward") == "ideal" ? Readout::kIdeal : Readout::kAnalog;
    skip_zero_cycles_ = p.GetBool("skip_zero_cycles");
    kernel_ = p.GetString("kernel") == "ref" ? KernelChoice::kRef : KernelChoice::kFast;
    pending_calibration_ = range_mode_ == RangeMode::kCalibrated;
    calibrate_range_ = pending_calibration_;
    calibrate_gain_ = false;
    // Every configured ADC must be able to show its INL monotonically: the forward one, and the
    // transposed read's (its own resolution when adc.bits is 0) when that read is analog.
    for (Direction d : {Direction::kForward, Direction::kTransposed}) {
      if (d == Direction::kTransposed && readout_[1] != Readout::kAnalog) continue;
      const int min_bits = std::max(1, Resolve(d).bits);
      if (inl_lsb_ >= (std::ldexp(1.0, min_bits) - 1) / 4.0) {
        const ConfigNode& n = adc.At("inl_lsb");
        throw ConfigError(n.Where() + ": " + n.text() + " LSB of INL is too large for the " +
                          (d == Direction::kForward ? "forward" : "transposed") + " read's " +
                          std::to_string(min_bits) +
                          "-bit ADC to stay monotone (< (2^bits-1)/4)");
      }
    }
  }

  static Schema GetSchema() {
    auto adc = std::make_shared<Schema>();
    adc->Add(Param::Int("bits").Default(0).Range(0, 20).Unit("bit").Doc(
        "ADC resolution; 0: the dataflow's formula (A: P_R+P_D(-1)+log2 rows, B: A + log2 "
        "cycles, C: output_bits)"));
    adc->Add(Param::Enum("range", {"fixed", "calibrated"}).Default("fixed").Doc(
        "fixed: full scale = full_scale x the largest possible partial sum (set by hardware); "
        "calibrated: searched for least output error on the first forward input (and when a "
        "training algorithm asks)"));
    adc->Add(Param::Bool("follow_input_scale").Default(false).Doc(
        "calibrated range: follow the per-tensor input exponent, so the range stays the "
        "calibrated one in real terms (for training that recalibrates, e.g. pim_qat); false: "
        "the range stays in DAC-input units"));
    adc->Add(Param::Enum("transposed_range", {"full", "calibrated"}).Default("full").Doc(
        "the transposed (error propagation) read's ADC range: full = the largest possible "
        "partial sum; calibrated = searched for least error against the exact transposed "
        "product on the first transposed input (and when a training algorithm recalibrates)"));
    adc->Add(Param::Float("full_scale").Default(1.0).Range(1e-6, 1.0).Doc(
        "fixed range as a fraction of the largest possible partial sum"));
    adc->Add(Param::Float("inl_lsb").Default(0.0).Range(0, 1e6).Unit("LSB").Doc(
        "bow-shaped integral non-linearity, peak at mid-scale (0: linear)"));
    auto thermal = std::make_shared<Schema>();
    thermal->Add(Param::Float("sigma").Default(0.0).Range(0, 1e9).Doc(
        "Gaussian read noise per conversion, in partial-sum units (one cell level x one DAC "
        "level = 1); 0: off"));
    auto sinad = std::make_shared<Schema>();
    sinad->Add(Param::Float("db").Default(0.0).Range(0, 200).Unit("dB").Doc(
        "lumped output noise sigma = full scale / 10^(SINAD/20) per conversion (Neural-PIM); "
        "0: off"));
    auto prog = std::make_shared<Schema>();
    prog->Add(Param::Float("sigma").Default(0.0).Range(0, 10).Doc(
        "relative Gaussian spread of each cell's conductance, drawn when programmed; 0: off"));
    auto nnsa = std::make_shared<Schema>();
    nnsa->Add(Param::Float("sigma").Default(0.0).Range(0, 1e9).Doc(
        "dataflow C: Gaussian noise added by each NNS+A step, partial-sum units; 0: off"));
    Schema s;
    s.Add(Param::Int("rows").Default(128).Range(1, 4096).Doc(
        "word lines per array: the row block one bit line sums"));
    s.Add(Param::Int("cols").Default(128).Range(1, 1 << 16).Doc("bit lines per array"));
    s.Add(Param::Int("arrays_per_core").Default(1).Range(1, 1 << 20).Doc("arrays per core"));
    s.Add(Param::Int("cores").Default(1).Range(1, 1 << 20).Doc("cores"));
    s.Add(Param::Int("input_bits").Default(8).Range(1, 16).Unit("bit").Doc(
        "magnitude bits of forward inputs (negative inputs run in a second phase)"));
    s.Add(Param::Int("error_bits").Default(0).Range(0, 16).Unit("bit").Doc(
        "magnitude bits of transposed-direction inputs (errors); 0 = input_bits"));
    s.Add(Param::Int("weight_bits").Default(8).Range(2, 16).Unit("bit").Doc(
        "signed weight width, symmetric range +-(2^(bits-1) - 1)"));
    s.Add(Param::Enum("decomposition", {"bit_serial", "native", "differential", "custom"})
              .Default("bit_serial")
              .Doc("PIM-QAT's schemes: bit_serial (1-bit DAC, 1-bit cells, weight_encoding), "
                   "native (one read per multi-bit MAC, offset column), differential (W+ - W- "
                   "multi-bit cells), custom (dac_bits, cell_bits, weight_encoding)"));
    s.Add(Param::Int("dac_bits").Default(1).Range(1, 8).Unit("bit").Doc(
        "input bits per DAC cycle (custom)"));
    s.Add(Param::Int("cell_bits").Default(1).Range(1, 4).Unit("bit").Doc(
        "bits per cell (custom)"));
    s.Add(Param::Enum("weight_encoding", {"offset", "differential"}).Default("offset").Doc(
        "signed weights: offset (w + 2^(bits-1) stored, offset x sum(x) subtracted digitally) "
        "or differential pairs in adjacent columns, each column converted"));
    s.Add(Param::Enum("input_scale", {"max", "mse"}).Default("max").Doc(
        "forward input quantizer's per-tensor power-of-two scale: max (set by the largest "
        "|x|) or mse (of 2^e_max .. 2^(e_max - 3), the one with the least squared quantization "
        "error over the layer's whole input tensor; larger inputs saturate at the top code). "
        "The search is digital, counted as digital_macs (one per input and candidate)"));
    s.Add(Param::Enum("gradient_inputs", {"fp", "quantized"}).Default("fp").Doc(
        "the activations GC multiplies (dW = g x^T dy, digital): fp (the layer's FP32 inputs) "
        "or quantized (the input codes the forward read applied to the DACs, at that read's "
        "scale: the gradient of the function the forward computed)"));
    s.Add(Param::Enum("weight_scale", {"tensor", "column"}).Default("tensor").Doc(
        "weight quantizer: tensor (one power-of-two scale for the layer, set by its largest "
        "|w|) or column (one scale per output column, max |w_c| / (2^(bits-1) - 1), applied "
        "by a digital multiply per output in the shift-add stage: out_scale_multiplies)"));
    s.Add(Param::Enum("dataflow", {"A", "B", "C"}).Default("A").Doc(
        "A (ISAAC/PRIME): ADC per bit-line partial sum per cycle; B (CASCADE): analog buffer "
        "lines of equal significance converted; C (Neural-PIM): NNS+A analog accumulation, one "
        "NNADC conversion"));
    s.Add(Param::Int("output_bits").Default(8).Range(1, 20).Unit("bit").Doc(
        "dataflow C: the NNADC resolution P_O"));
    s.Add(Param::Section("adc", adc).Doc("the read-out ADC"));
    s.Add(Param::Section("thermal_noise", thermal).Doc("per-conversion read noise"));
    s.Add(Param::Section("sinad", sinad).Doc("SINAD-based lumped output noise"));
    s.Add(Param::Section("programming_variation", prog).Doc("per-cell conductance spread"));
    s.Add(Param::Section("nnsa", nnsa).Doc("Neural-PIM's neural shift-and-add"));
    s.Add(Param::Enum("forward", {"analog", "ideal"}).Default("analog").Doc(
        "forward read-out: the analog chain or the exact product of the quantized operands"));
    s.Add(Param::Enum("backward", {"analog", "ideal"}).Default("analog").Doc(
        "transposed (error propagation) read-out"));
    s.Add(Param::Bool("skip_zero_cycles").Default(true).Doc(
        "input cycles whose block inputs are all zero are not applied (no reads, no "
        "conversions)"));
    s.Add(Param::Bool("master_weights").Default(true).Doc(
        "FP32 master weights outside the array (false: the layer's weights become the "
        "quantized array weights after each update)"));
    s.Add(Param::Enum("kernel", {"fast", "ref"}).Default("fast").Doc(
        "fast: bit-packed planes and 8-wide conversions; ref: the cycle-by-cycle loops "
        "(identical results, slow)"));
    s.Add(Param::Component("device", "device").Default("{impl: ideal}").Doc(
        "device response model of each cell (docs/devices.md); non-ideal: device mode"));
    s.Add(Param::Component("update", "update").Default("{impl: ideal}").Doc(
        "in-array weight update: ideal (exact reprogramming), stochastic_pulses, "
        "deterministic_pulses, write_verify; non-ideal: device mode"));
    s.Add(Param::Section("deployment", DeploymentSchema()).Default("~").Doc(
        "deployment over time (PCM drift, noise, stuck-at faults) applied when weights are "
        "programmed for evaluation; sets device mode (docs/devices.md)"));
    s.Add(Param::Section("io", IoSchema()).Default("~").Doc(
        "aihwkit-style read path (spec section 3; {} = its defaults); sets device mode"));
    auto mapping = std::make_shared<Schema>();
    mapping->Add(Param::Float("weight_scaling_omega").Default(0.0).Range(0, 1).Doc(
        "device mode, aihwkit MappingParameter: at programming the layer's (or column's) "
        "max |w| is mapped to omega x the device's weight range (min(w_max, -w_min)), with a "
        "digital scale per output column; 0: weights map 1:1 onto device values"));
    mapping->Add(Param::Bool("weight_scaling_columnwise").Default(false).Doc(
        "one scale per output column (its max |w|) instead of one per layer"));
    s.Add(Param::Section("mapping", mapping).Doc(
        "weight-to-conductance mapping of device mode (docs/devices.md, \"Mapping\")"));
    return s;
  }

  const MacroSpec& spec() const override { return spec_; }
  CounterSet Counters() const override {
    return CounterSet::Union("macro/analog_crossbar",
                             {&kernels::AnalogKernelCounters(), &AnalogCrossbarCounters()});
  }

  float ForwardInputBound(ConstMatrixView x) override {
    if (!mse_input_scale_ || device_mode_) return -1.0f;
    return MseInputBound(x);
  }

  // ---- AnalogTunable ----
  void SetReadout(Direction dir, Readout r) override { readout_[Index(dir)] = r; }
  Readout readout(Direction dir) const override { return readout_[Index(dir)]; }
  void SetAdcBitsDelta(int delta) override { bits_delta_ = delta; }
  void RequestCalibration(bool range, bool gain) override {
    pending_calibration_ = range || gain;
    calibrate_range_ = range;
    calibrate_gain_ = gain;
    if (range && calibrate_t_range_) pending_t_calibration_ = true;
  }
  double adc_full_scale_fraction() const override { return fs_fraction_; }
  double output_gain() const override { return gain_; }
  void TakeCalibrationCounts(ActionCounts& out) override {
    if (calibration_counts_.empty()) return;
    out.Merge(calibration_counts_);
    calibration_counts_.Clear();
  }
  ClipTally TakeForwardClipTally() override {
    const ClipTally t = clip_tally_;
    clip_tally_ = {};
    return t;
  }

  void Program(ConstMatrixView w, const RunContext& ctx, ActionCounts& counts) override {
    rows_ = w.rows;
    cols_ = w.cols;
    if (device_mode_) {
      ProgramDevices(w, ctx, counts);
      return;
    }
    const int bw = spec_.weight_bits;
    ThreadPool* pool = ctx.pool != nullptr ? ctx.pool : &DefaultPool();
    // Symmetric quantization: |q| <= 2^(bw-1) - 1, with one power-of-two scale for the layer
    // or (weight_scale: column) one scale per output column.
    if (column_scale_) {
      QuantizeColumns(w, bw - 1);
    } else {
      weight_exp_ = QuantizeSignMagnitude(w, bw - 1, -1.0f, wq_, *pool);
      col_scale_.clear();
    }
    offset_ = encoding_ == Encoding::kOffset ? (int64_t{1} << (bw - 1)) : 0;
    const float scale = static_cast<float>(std::ldexp(1.0, weight_exp_));
    const int pol = polarities_;
    const int64_t ncp = cols_ * pol, nrp = rows_ * pol;
    Side& f = side_[0];
    Side& t = side_[1];
    f.k = rows_;
    f.n = cols_;
    t.k = cols_;
    t.n = rows_;
    wdeq_.resize(wq_.size());  // dequantized weights for the ideal read-out
    f.levels.resize(static_cast<size_t>(rows_ * ncp));
    const int32_t off = static_cast<int32_t>(offset_);
    // Dequantized weights and the forward levels, row by row; rows split over threads.
    pool->ParallelFor(rows_, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int32_t* q = wq_.data() + r * cols_;
        float* dq = wdeq_.data() + r * cols_;
        int32_t* lv = f.levels.data() + r * ncp;
        if (col_scale_.empty()) {
          for (int64_t c = 0; c < cols_; ++c) dq[c] = static_cast<float>(q[c]) * scale;
        } else {
          for (int64_t c = 0; c < cols_; ++c) dq[c] = static_cast<float>(q[c]) * col_scale_[c];
        }
        if (pol == 1) {
          for (int64_t c = 0; c < cols_; ++c) lv[c] = q[c] + off;
        } else {
          for (int64_t c = 0; c < cols_; ++c) {
            lv[2 * c] = std::max(q[c], 0);
            lv[2 * c + 1] = std::max(-q[c], 0);
          }
        }
      }
    });
    // Forward: the reduction over word lines, `rows` per array; bit lines: n * pol * slices.
    f.block = spec_.rows;
    f.tile_cols = spec_.cols;
    f.reads_per_cycle = 1;
    // Transposed: the inputs drive the bit lines of one slice and polarity per cycle, the word
    // lines are sensed; an array holds cols / (pol * slices) weight columns.
    t.block = std::max<int64_t>(1, spec_.cols / (pol * slices_));
    t.tile_cols = spec_.rows * pol * slices_;
    t.reads_per_cycle = pol * slices_;
    // Programming variation: each cell's conductance = level * (1 + sigma z), z drawn per cell
    // when written (keyed by the programming step), clipped at 0.
    const int cmask = (1 << cell_bits_) - 1;
    if (program_sigma_ > 0) {
      const uint64_t key = MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                                  static_cast<uint64_t>(ctx.step), kStreamProgram);
      f.conductance.resize(static_cast<size_t>(rows_ * slices_ * ncp));
      t.conductance.resize(static_cast<size_t>(cols_ * slices_ * nrp));
      for (int64_t r = 0; r < rows_; ++r) {
        for (int q = 0; q < slices_; ++q) {
          for (int64_t cp = 0; cp < ncp; ++cp) {
            const int32_t level = (f.levels[r * ncp + cp] >> (q * cell_bits_)) & cmask;
            const uint64_t cell = static_cast<uint64_t>((r * slices_ + q) * ncp + cp);
            const float g = std::max(
                0.0f, static_cast<float>(level) *
                          (1.0f + static_cast<float>(program_sigma_) * NoiseNormal(key, 0, cell)));
            f.conductance[cell] = g;
            const int64_t c = cp / pol, p = cp % pol;
            t.conductance[(c * slices_ + q) * nrp + r * pol + p] = g;
          }
        }
      }
    } else {
      f.conductance.clear();
      t.conductance.clear();
    }
    if (kernel_ == KernelChoice::kFast) {
      kernels::fast::PackWeights(BaseProblem(f), f.packed, pool);
    }
    // The transposed levels and packing wait for the first transposed read (a first layer's
    // errors are never propagated, and its transposed planes are the largest: 8-row blocks).
    transposed_ready_ = false;
    const int64_t cells = rows_ * cols_ * pol * slices_;
    counts.Add("weight_writes", cells);
    const int64_t arrays = ((rows_ + spec_.rows - 1) / spec_.rows) *
                           ((cols_ * pol * slices_ + spec_.cols - 1) / spec_.cols);
    counts.Add("array_cells_allocated", arrays * spec_.rows * spec_.cols);
    counts.Add("array_cells_used", cells);
  }

  // The transposed direction's levels (and packed planes): t.levels[c * nrp + r * pol + p] =
  // f.levels[r * ncp + c * pol + p], built on the first transposed read after programming.
  void PrepareTransposed(ThreadPool* pool) {
    if (transposed_ready_) return;
    const int pol = polarities_;
    const int64_t ncp = cols_ * pol, nrp = rows_ * pol;
    const Side& f = side_[0];
    Side& t = side_[1];
    t.levels.resize(static_cast<size_t>(cols_ * nrp));
    // In 32 x 32 tiles, column tiles split over threads.
    pool->ParallelFor((cols_ + 31) / 32, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t ct = t0; ct < t1; ++ct) {
        const int64_t c0 = ct * 32, c1 = std::min(cols_, c0 + 32);
        for (int64_t r0 = 0; r0 < rows_; r0 += 32) {
          const int64_t r1 = std::min(rows_, r0 + 32);
          for (int64_t c = c0; c < c1; ++c) {
            int32_t* dst = t.levels.data() + c * nrp;
            if (pol == 1) {
              for (int64_t r = r0; r < r1; ++r) dst[r] = f.levels[r * ncp + c];
            } else {
              for (int64_t r = r0; r < r1; ++r) {
                dst[2 * r] = f.levels[r * ncp + 2 * c];
                dst[2 * r + 1] = f.levels[r * ncp + 2 * c + 1];
              }
            }
          }
        }
      }
    });
    if (kernel_ == KernelChoice::kFast) kernels::fast::PackWeights(BaseProblem(t), t.packed, pool);
    transposed_ready_ = true;
  }

  void Multiply(ConstMatrixView x, MatrixView y, Direction dir, const RunContext& ctx,
                ActionCounts& counts) override {
    if (device_mode_) {
      ReadDevices(x, y, dir, ctx, counts);
      return;
    }
    const bool fwd = dir == Direction::kForward;
    const Side& side = side_[Index(dir)];
    PIM_CHECK_MSG(x.cols == side.k && y.cols == side.n && x.rows == y.rows,
                  "Multiply: operand shapes do not match the programmed weights");
    const int bits = fwd ? spec_.input_bits : spec_.error_bits;
    // Column scales: every output (forward) or every error input (transposed) is multiplied
    // by its column's scale in the digital periphery.
    if (!col_scale_.empty()) counts.Add("out_scale_multiplies", x.rows * cols_);
    if (fwd && input_search_macs_ > 0) {  // the input_scale: mse search (ForwardInputBound)
      counts.Add("digital_macs", input_search_macs_);
      input_search_macs_ = 0;
    }
    // A transposed analog read with column scales: dx = sum_c (dy_c s_c) q_c, so the errors
    // enter the DACs multiplied by s_c / s_max (<= 1: the batch's largest |dy| still bounds
    // them, keeping the per-tensor exponent of a sliced batch) and s_max goes with the output.
    if (!fwd && !col_scale_.empty() && readout_[Index(dir)] != Readout::kIdeal) {
      x = ScaleErrorsByColumn(x);
    }
    const int ex = QuantizeSignMagnitude(x, bits, ctx.input_max_abs, xq_,
                                         ctx.pool != nullptr ? *ctx.pool : DefaultPool());
    if (fwd) {
      last_forward_exp_ = ex;
      have_forward_exp_ = true;
    }
    if (readout_[Index(dir)] == Readout::kIdeal) {
      // The transposed read carries the calibrated gain (y = g Q(x W) => dx = g dy W^T).
      Ideal(x.rows, dir, ex, y, ctx, fwd ? 1.0 : gain_);
      counts.Add("macs", x.rows * side.k * side.n);
      counts.Add("digital_macs", x.rows * side.k * side.n);
      return;
    }
    const uint64_t key = CallKey(ctx, dir, 0x616e61);
    if (fwd && pending_calibration_) {
      Calibrate(x.rows, ex, key, ctx, Direction::kForward);
      pending_calibration_ = false;
    }
    if (!fwd) PrepareTransposed(ctx.pool != nullptr ? ctx.pool : &DefaultPool());
    if (!fwd && pending_t_calibration_) {
      Calibrate(x.rows, ex, key, ctx, Direction::kTransposed);
      pending_t_calibration_ = false;
    }
    const Chain chain = Resolve(dir, fwd ? TrackedFraction(ex) : -1.0);
    yq_.resize(static_cast<size_t>(x.rows * side.n));
    kernels::AnalogCounts kc;
    Run(x.rows, dir, chain, key, yq_.data(), ctx, kc);
    kc.AddTo(counts);
    if (fwd) {
      clip_tally_.conversions += kc.adc_conversions;
      clip_tally_.clipped += kc.adc_clipped;
    }
    Finish(x.rows, dir, ex, chain, yq_.data(), gain_, y);
    if (offset_ != 0) counts.Add("offset_corrections", x.rows * side.n);
  }

  // GC is digital: analog crossbars compute FP and BP in the array but not X^T dY (which would
  // need the activations written into an array each step); dW = X^T dY in exact FP32.
  void GradientCalc(ConstMatrixView x, ConstMatrixView dy, MatrixView dw, const RunContext& ctx,
                    ActionCounts& counts) override {
    PIM_CHECK_MSG(x.rows == dy.rows && dw.rows == x.cols && dw.cols == dy.cols,
                  "GradientCalc: operand shapes do not match");
    if (gc_quantized_inputs_ && !device_mode_) x = ForwardCodesOf(x, ctx);
    kernels::GemmArgs g;
    g.trans_a = kernels::Trans::kYes;
    g.m = x.cols;
    g.n = dy.cols;
    g.k = x.rows;
    g.a = x.data;
    g.lda = x.ld;
    g.b = dy.data;
    g.ldb = dy.ld;
    g.c = dw.data;
    g.ldc = dw.ld;
    g.alpha = static_cast<float>(gain_);  // the calibrated output gain (PIM-QAT rescaling)
    kernels::fast::Gemm(g, ctx.pool);
    counts.Add("digital_macs", x.rows * x.cols * dy.cols);
  }

  void ReadWeights(MatrixView w) const override {
    PIM_CHECK_MSG(w.rows == rows_ && w.cols == cols_, "ReadWeights: shape mismatch");
    if (device_mode_) {
      for (int64_t r = 0; r < rows_; ++r) {
        std::copy(array_->hidden() + r * cols_, array_->hidden() + (r + 1) * cols_, w.Row(r));
        if (!out_scale_.empty()) {
          float* row = w.Row(r);
          for (int64_t c = 0; c < cols_; ++c) row[c] *= OutScale(c);
        }
      }
      return;
    }
    for (int64_t r = 0; r < rows_; ++r) {
      std::copy(wdeq_.begin() + r * cols_, wdeq_.begin() + (r + 1) * cols_, w.Row(r));
    }
  }

  std::map<std::string, double> HardwareParams() const override {
    const Chain f = Resolve(Direction::kForward), t = Resolve(Direction::kTransposed);
    const DataflowFigures fig = DataflowFormula(dataflow_, spec_.input_bits, stored_bits_,
                                                cell_bits_, dac_bits_, spec_.rows, output_bits_);
    return {{"rows", static_cast<double>(spec_.rows)},
            {"cols", static_cast<double>(spec_.cols)},
            {"block_rows", static_cast<double>(spec_.rows)},
            {"arrays_total", static_cast<double>(spec_.arrays_per_core * spec_.cores)},
            {"input_bits", static_cast<double>(spec_.input_bits)},
            {"error_bits", static_cast<double>(spec_.error_bits)},
            {"weight_bits", static_cast<double>(spec_.weight_bits)},
            {"dac_bits", static_cast<double>(dac_bits_)},
            {"cell_bits", static_cast<double>(cell_bits_)},
            {"slices", static_cast<double>(slices_)},
            {"polarities", static_cast<double>(polarities_)},
            {"dataflow", static_cast<double>(static_cast<int>(dataflow_))},
            {"adc_bits", static_cast<double>(f.bits)},
            {"adc_bits_transposed", static_cast<double>(t.bits)},
            {"output_bits", static_cast<double>(output_bits_)},
            {"conversions_per_group", static_cast<double>(fig.conversions_per_group)},
            {"input_cycles_per_group", static_cast<double>(fig.input_cycles)},
            {"adc_full_scale_fraction", fs_fraction_},
            {"adc_full_scale_fraction_transposed", fs_fraction_t_}};
  }

  // ---- device mode (docs/devices.md) ----
  void UpdateInArray(ConstMatrixView x, ConstMatrixView d, float lr, const RunContext& ctx,
                     ActionCounts& counts) override {
    if (!device_mode_) {
      throw UnsupportedError(
          "analog_crossbar: in-array update needs device mode (a device, update or io block)");
    }
    PIM_CHECK_MSG(array_ != nullptr && x.cols == rows_ && d.cols == cols_ && x.rows == d.rows,
                  "UpdateInArray: operand shapes do not match the programmed weights");
    const UpdateContext uc = MakeUpdateContext(ctx);
    d = ToDeviceUnits(d, ds_, counts);  // the mapping's scales (identity without one)
    if (device_->ideal()) {
      // The ideal device: the exact increment whatever the rule (no pulses to apply).
      std::vector<float> dw;
      OuterGradient(x, d, dw, ctx.pool);
      for (int64_t i = 0; i < array_->size(); ++i) array_->Add(i, -lr * dw[i]);
      counts.Add("weight_writes", array_->size());
      counts.Add("digital_macs", x.rows * x.cols * d.cols);
      return;
    }
    update_->Apply(*array_, x, d, lr, uc, 1, counts);
    TakeUnitCellCounts(*array_, counts);  // a unit cell's refreshes (unit_cell.h)
  }
  bool device_mode() const override { return device_mode_; }
  DeviceArray& weight_array() override {
    PIM_CHECK_MSG(array_ != nullptr, "weight_array before Program");
    return *array_;
  }
  DeviceArray& fast_array(uint64_t seed, int layer) override {
    if (fast_ == nullptr) {
      if (array_ != nullptr && UnitCellState(*array_) != nullptr) {
        throw UnsupportedError("analog_crossbar: a unit cell device (one_sided) as Tiki-Taka's "
                               "fast array is not modelled (use analog_sgd or mixed_precision)");
      }
      fast_ = std::make_unique<DeviceArray>(device_, rows_, cols_, MixKey(seed, layer, 0x66617374));
      std::vector<float> zero(static_cast<size_t>(rows_ * cols_), 0.0f);
      fast_->Set(ConstMatrixView(zero.data(), rows_, cols_, cols_), MixKey(seed, layer, 0x6661));
    }
    return *fast_;
  }
  const DeviceArray* fast_array_if_created() const override { return fast_.get(); }
  const UpdateRule& update_rule() const override { return *update_; }
  const IoParams& io() const override { return io_; }
  std::vector<float>& out_scales() override { return out_scale_; }
  ConstMatrixView ToDeviceUnits(ConstMatrixView d, std::vector<float>& buf,
                                ActionCounts& counts) const override {
    if (out_scale_.empty()) return d;
    buf.resize(static_cast<size_t>(d.rows * d.cols));
    for (int64_t s = 0; s < d.rows; ++s) {
      const float* in = d.Row(s);
      float* o = buf.data() + s * d.cols;
      for (int64_t c = 0; c < d.cols; ++c) o[c] = in[c] / OutScale(c);
    }
    counts.Add("out_scale_multiplies", d.rows * d.cols);
    return ConstMatrixView(buf.data(), d.rows, d.cols, d.cols);
  }

 private:
  static UpdateContext MakeUpdateContext(const RunContext& ctx) {
    UpdateContext uc;
    uc.seed = ctx.seed;
    uc.step = ctx.step;
    uc.layer = ctx.layer;
    uc.pool = ctx.pool;
    return uc;
  }
  int64_t Tiles() const {
    return ((rows_ + spec_.rows - 1) / spec_.rows) * ((cols_ + spec_.cols - 1) / spec_.cols);
  }
  // Exact programming of every device (the first call draws the device-to-device spreads,
  // keyed by (seed, layer) and the cell index; later calls keep them).
  void ProgramDevices(ConstMatrixView w, const RunContext& ctx, ActionCounts& counts) {
    if (array_ == nullptr || array_->rows() != w.rows || array_->cols() != w.cols) {
      array_ = std::make_unique<DeviceArray>(
          device_, w.rows, w.cols, MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer), 0x646576));
    }
    std::vector<float> mapped;
    if (omega_ > 0) w = MapWeights(w, mapped);
    if (has_deployment_) {
      // The deployed weights: programmed once, read at t_inference (docs/devices.md).
      std::vector<float> d(static_cast<size_t>(w.rows * w.cols));
      for (int64_t r = 0; r < w.rows; ++r) {
        std::copy(w.Row(r), w.Row(r) + w.cols, d.data() + r * w.cols);
      }
      ApplyDeployment(deployment_, ctx.seed, ctx.layer, d.data(), static_cast<int64_t>(d.size()));
      array_->Set(ConstMatrixView(d.data(), w.rows, w.cols, w.cols),
                  MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer), 0x77726974));
    } else {
      array_->Set(w, MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                            static_cast<uint64_t>(ctx.step), 0x77726974));
    }
    const int64_t per_weight = DevicesPerWeight(*array_);  // 2 for a one_sided pair
    counts.Add("weight_writes", per_weight * w.rows * w.cols);
    const int64_t tiles = Tiles();
    counts.Add("array_cells_allocated", per_weight * tiles * spec_.rows * spec_.cols);
    counts.Add("array_cells_used", per_weight * w.rows * w.cols);
  }
  // The io read path on the devices' read weights; noise keyed like the integer path.
  // The noise stream of one read: keyed by (seed, layer, step, stage, call within the step,
  // direction, salt of the read path), so slices of a batch, and every evaluation batch, draw
  // fresh noise.
  uint64_t CallKey(const RunContext& ctx, Direction dir, uint64_t salt) {
    if (ctx.step != last_step_ || ctx.stage != last_stage_) {
      last_step_ = ctx.step;
      last_stage_ = ctx.stage;
      call_ = 0;
    }
    return MixKey(MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                         static_cast<uint64_t>(ctx.step), static_cast<uint64_t>(ctx.stage)),
                  static_cast<uint64_t>(call_++), static_cast<uint64_t>(Index(dir)), salt);
  }

  void ReadDevices(ConstMatrixView x, MatrixView y, Direction dir, const RunContext& ctx,
                   ActionCounts& counts) {
    const bool fwd = dir == Direction::kForward;
    PIM_CHECK_MSG(array_ != nullptr && x.cols == (fwd ? rows_ : cols_) &&
                      y.cols == (fwd ? cols_ : rows_) && x.rows == y.rows,
                  "Multiply: operand shapes do not match the programmed weights");
    const uint64_t key = CallKey(ctx, dir, 0x696f);
    if (!out_scale_.empty() && !fwd) x = ToDeviceInputs(x);  // dx = (dy alpha) W_dev^T
    AnalogRead(io_, x, array_->read(), rows_, cols_, !fwd, key, Tiles(), y, ctx.pool, counts);
    if (!out_scale_.empty()) {
      if (fwd) {
        for (int64_t s = 0; s < y.rows; ++s) {
          float* row = y.Row(s);
          for (int64_t c = 0; c < cols_; ++c) row[c] *= OutScale(c);  // y = alpha (x W_dev)
        }
      }
      counts.Add("out_scale_multiplies", x.rows * cols_);
    }
  }
  // ---- weight mapping (pim.macro.mapping; aihwkit MappingParameter) ----
  // Column c's scale alpha_c: W = alpha_c W_dev (one value for the layer unless columnwise).
  float OutScale(int64_t c) const { return out_scale_.size() == 1 ? out_scale_[0] : out_scale_[c]; }
  // The device weight range the largest |w| is mapped into: a one-sided device's pair spans
  // +-w_max; a two-sided device the smaller of its bounds.
  double MappingRange() const {
    const PulsedParams& pp = device_->params();
    const double r = pp.w_min >= 0 ? pp.w_max : std::min(pp.w_max, -pp.w_min);
    return r > 0 ? r : 1.0;
  }
  // Sets alpha_c = max|w_:c| / (omega x range) (1 for an all-zero column) and returns W / alpha.
  ConstMatrixView MapWeights(ConstMatrixView w, std::vector<float>& mapped) {
    const int64_t n = columnwise_ ? w.cols : 1;
    std::vector<float> mx(static_cast<size_t>(n), 0.0f);
    for (int64_t r = 0; r < w.rows; ++r) {
      const float* row = w.Row(r);
      for (int64_t c = 0; c < w.cols; ++c) {
        float& m = mx[columnwise_ ? c : 0];
        m = std::max(m, std::fabs(row[c]));
      }
    }
    out_scale_.assign(static_cast<size_t>(n), 1.0f);
    for (int64_t c = 0; c < n; ++c) {
      if (mx[c] > 0) out_scale_[c] = static_cast<float>(mx[c] / (omega_ * MappingRange()));
    }
    mapped.resize(static_cast<size_t>(w.rows * w.cols));
    for (int64_t r = 0; r < w.rows; ++r) {
      const float* row = w.Row(r);
      for (int64_t c = 0; c < w.cols; ++c) mapped[r * w.cols + c] = row[c] / OutScale(c);
    }
    return ConstMatrixView(mapped.data(), w.rows, w.cols, w.cols);
  }
  // A transposed read's inputs (dY, one per column) times the columns' scales.
  ConstMatrixView ToDeviceInputs(ConstMatrixView x) {
    xs_.resize(static_cast<size_t>(x.rows * x.cols));
    for (int64_t s = 0; s < x.rows; ++s) {
      const float* in = x.Row(s);
      for (int64_t c = 0; c < x.cols; ++c) xs_[s * x.cols + c] = in[c] * OutScale(c);
    }
    return ConstMatrixView(xs_.data(), x.rows, x.cols, x.cols);
  }

  std::shared_ptr<const Device> device_;
  std::unique_ptr<UpdateRule> update_;
  IoParams io_;
  bool device_mode_ = false;
  bool has_deployment_ = false;
  DeploymentParams deployment_;
  std::unique_ptr<DeviceArray> array_, fast_;
  double omega_ = 0;        // pim.macro.mapping (0: off)
  bool columnwise_ = false;
  std::vector<float> out_scale_;  // alpha per column (or one); empty: no mapping
  std::vector<float> xs_, ds_;    // scaled operands

 private:
  struct Chain {
    int bits = 8;
    double design_full_scale = 1;  // the largest partial sum the converter can see
    double code_unit = 1;          // the partial-sum value of one unit of the kernel's sums
    kernels::AnalogReadout readout;
  };

  static int Index(Direction d) { return d == Direction::kForward ? 0 : 1; }

  // The read-out chain of a direction: resolution (configured or the dataflow's formula, plus
  // the adjusted-precision delta), full scale, noise.
  Chain Resolve(Direction dir, double fraction = -1) const {
    const bool fwd = dir == Direction::kForward;
    const int xb = fwd ? spec_.input_bits : spec_.error_bits;
    const int64_t block = fwd ? spec_.rows
                              : std::max<int64_t>(1, spec_.cols / (polarities_ * slices_));
    Chain ch;
    const DataflowFigures fig =
        DataflowFormula(dataflow_, xb, stored_bits_, cell_bits_, dac_bits_, block, output_bits_);
    // Dataflow B (R-Mapping): a buffer line collects its partial sums from every row block of
    // the output before its one conversion, so the lossless resolution grows by log2 blocks.
    const int64_t k = fwd ? rows_ : cols_;
    const int64_t blocks = std::max<int64_t>(1, (k + block - 1) / block);
    const int line_bits =
        dataflow_ == Dataflow::kB ? static_cast<int>(std::ceil(std::log2(blocks))) : 0;
    ch.bits = std::clamp(
        (adc_bits_cfg_ > 0 ? adc_bits_cfg_ : fig.adc_bits + line_bits) + bits_delta_, 1, 24);
    const double cell = std::ldexp(1.0, cell_bits_) - 1, dac = std::ldexp(1.0, dac_bits_) - 1;
    const double a = static_cast<double>(block) * cell * dac;
    const int cycles = kernels::InputCycles(xb, dac_bits_);
    switch (dataflow_) {
      case Dataflow::kA: ch.design_full_scale = a; break;
      case Dataflow::kB:
        // The most partial sums any buffer line adds up: its anti-diagonal's, in every block.
        ch.design_full_scale =
            a * kernels::detail::FullestLineB(cycles, slices_, dac_bits_, cell_bits_) *
            static_cast<double>(blocks);
        break;
      case Dataflow::kC:
        ch.design_full_scale = static_cast<double>(block) * (std::ldexp(1.0, xb) - 1) *
                               (std::ldexp(1.0, slices_ * cell_bits_) - 1);
        break;
    }
    // The forward ADC's range is the configured or calibrated fraction; the transposed read's
    // converter keeps the hardware's full range unless adc.transposed_range is calibrated.
    const double frac = fraction > 0 ? fraction : (fwd ? fs_fraction_ : fs_fraction_t_);
    const double fs = frac * ch.design_full_scale;
    double sigma2 = thermal_sigma_ * thermal_sigma_;
    if (sinad_db_ > 0) {
      const double s = SinadSigma(fs, sinad_db_);
      sigma2 += s * s;
    }
    ch.readout.dataflow = dataflow_;
    ch.readout.adc = MakeAdcTransfer(ch.bits, fs, InlFor(ch.bits), std::sqrt(sigma2));
    // B: every buffer line read with the gain that fills the ADC's range (R-Mapping knows how
    // many partial sums each line holds); the kernel's sums are then in 2^-E codes.
    ch.readout.line_gains = dataflow_ == Dataflow::kB;
    ch.code_unit = ch.readout.adc.lsb;
    if (dataflow_ == Dataflow::kB) {
      const std::vector<int> groups =
          kernels::SignificanceGroups(cycles, slices_, dac_bits_, cell_bits_);
      ch.code_unit = std::ldexp(ch.code_unit, -kernels::detail::LineGainShiftB(
                                                  kernels::detail::LineGainsB(
                                                      cycles, slices_, dac_bits_, cell_bits_,
                                                      groups, true)));
    }
    ch.readout.nnsa_sigma = static_cast<float>(nnsa_sigma_);
    return ch;
  }
  // The configured INL, capped so that a converter made coarser by adjusted precision stays
  // monotone.
  double InlFor(int bits) const {
    return std::min(inl_lsb_, 0.99 * (std::ldexp(1.0, bits) - 1) / 4.0);
  }

  kernels::AnalogProblem BaseProblem(const Side& s) const {
    kernels::AnalogProblem p;
    p.k = s.k;
    p.n = s.n;
    p.w = s.levels.data();
    p.polarities = polarities_;
    p.cell_bits = cell_bits_;
    p.slices = slices_;
    p.conductance = s.conductance.empty() ? nullptr : s.conductance.data();
    p.block = s.block;
    p.tile_cols = s.tile_cols;
    p.reads_per_cycle = s.reads_per_cycle;
    p.dac_bits = dac_bits_;
    p.skip_zero_cycles = skip_zero_cycles_;
    return p;
  }

  // Runs the kernel on the first m rows of xq_ into out (m x n integer code sums).
  void Run(int64_t m, Direction dir, const Chain& chain, uint64_t key, int64_t* out,
           const RunContext& ctx, kernels::AnalogCounts& kc) const {
    const Side& s = side_[Index(dir)];
    kernels::AnalogProblem p = BaseProblem(s);
    p.m = m;
    p.x = xq_.data();
    p.ldx = s.k;
    p.x_bits = dir == Direction::kForward ? spec_.input_bits : spec_.error_bits;
    p.signed_inputs = true;
    p.readout = chain.readout;
    p.noise_key = key;
    p.y = out;
    p.ldy = s.n;
    if (kernel_ == KernelChoice::kRef) {
      kernels::ref::AnalogMatMul(p, kc);
    } else {
      kernels::fast::AnalogMatMul(p, &s.packed, kc, ctx.pool != nullptr ? ctx.pool : &DefaultPool());
    }
  }

  // gradient_inputs: quantized. x as the forward read quantized it: the input bits at the
  // exponent of the step's last forward read (the same tensor: a layer's forward calls of one
  // batch share one exponent), dequantized; a first GC with no forward read before it uses the
  // max rule on x itself.
  ConstMatrixView ForwardCodesOf(ConstMatrixView x, const RunContext& ctx) {
    const double top = std::ldexp(1.0, spec_.input_bits) - 1;
    const float bound = have_forward_exp_ ? static_cast<float>(std::ldexp(top, last_forward_exp_))
                                          : -1.0f;
    const int ex = QuantizeSignMagnitude(x, spec_.input_bits, bound, gq_,
                                         ctx.pool != nullptr ? *ctx.pool : DefaultPool());
    const float sx = static_cast<float>(std::ldexp(1.0, ex));
    xg_.resize(gq_.size());
    for (size_t i = 0; i < gq_.size(); ++i) xg_[i] = static_cast<float>(gq_[i]) * sx;
    return ConstMatrixView(xg_.data(), x.rows, x.cols, x.cols);
  }

  // input_scale: mse. With e0 the max rule's exponent (PowerOfTwoExponent of max |x|) and
  // top = 2^bits - 1, the exponent e in {e0, e0 - 1, e0 - 2, e0 - 3} with the least
  // sum_i (x_i - 2^e clamp(round_half_even(x_i / 2^e), -top, top))^2 (in double, in index order:
  // the same sum at any thread count; ties keep the larger e), returned as the bound top 2^e,
  // for which the max rule gives exactly e. Non-finite inputs are left out, as the quantizer
  // maps NaN to 0.
  float MseInputBound(ConstMatrixView x) {
    const int bits = spec_.input_bits;
    float mx = 0;
    for (int64_t r = 0; r < x.rows; ++r) mx = std::max(mx, MaxFiniteAbs(x.Row(r), x.cols));
    if (!(mx > 0)) return -1.0f;
    const int e0 = PowerOfTwoExponent(mx, bits + 1, Signedness::kSigned);
    const double top = std::ldexp(1.0, bits) - 1;
    int best_e = e0;
    double best = std::numeric_limits<double>::infinity();
    for (int d = 0; d < kInputScaleCandidates; ++d) {
      const int e = e0 - d;
      const double inv = std::ldexp(1.0, -e), step = std::ldexp(1.0, e);
      double err = 0;
      for (int64_t r = 0; r < x.rows; ++r) {
        const float* row = x.Row(r);
        for (int64_t c = 0; c < x.cols; ++c) {
          const double v = row[c];
          if (!std::isfinite(v)) continue;
          const double q = std::min(std::max(std::nearbyint(v * inv), -top), top);
          err += (v - q * step) * (v - q * step);
        }
      }
      if (err < best) {
        best = err;
        best_e = e;
      }
    }
    input_search_macs_ += kInputScaleCandidates * x.rows * x.cols;
    return static_cast<float>(std::ldexp(top, best_e));
  }

  // weight_scale: column. Column c's scale s_c = max_r |w_rc| / top (1 for an all-zero
  // column), q_rc = clamp(round_half_even(w_rc / s_c), -top, top), top = 2^bits - 1.
  void QuantizeColumns(ConstMatrixView w, int bits) {
    const double top = std::ldexp(1.0, bits) - 1;
    std::vector<double> mx(static_cast<size_t>(w.cols), 0.0);
    for (int64_t r = 0; r < w.rows; ++r) {
      const float* row = w.Row(r);
      for (int64_t c = 0; c < w.cols; ++c) {
        const double a = std::fabs(static_cast<double>(row[c]));
        if (std::isfinite(a)) mx[c] = std::max(mx[c], a);
      }
    }
    col_scale_.assign(static_cast<size_t>(w.cols), 1.0f);
    col_scale_max_ = 0;
    for (int64_t c = 0; c < w.cols; ++c) {
      if (mx[c] > 0) col_scale_[c] = static_cast<float>(mx[c] / top);
      col_scale_max_ = std::max(col_scale_max_, col_scale_[c]);
    }
    weight_exp_ = 0;
    wq_.resize(static_cast<size_t>(w.rows * w.cols));
    for (int64_t r = 0; r < w.rows; ++r) {
      const float* row = w.Row(r);
      int32_t* out = wq_.data() + r * w.cols;
      for (int64_t c = 0; c < w.cols; ++c) {
        double t = std::nearbyint(static_cast<double>(row[c]) / col_scale_[c]);
        t = t != t ? 0.0 : std::min(std::max(t, -top), top);
        out[c] = static_cast<int32_t>(t);
      }
    }
  }
  // The transposed inputs times s_c / s_max (column scales; see Multiply).
  ConstMatrixView ScaleErrorsByColumn(ConstMatrixView d) {
    xs_.resize(static_cast<size_t>(d.rows * d.cols));
    for (int64_t i = 0; i < d.rows; ++i) {
      const float* in = d.Row(i);
      float* o = xs_.data() + i * d.cols;
      for (int64_t c = 0; c < d.cols; ++c) o[c] = in[c] * (col_scale_[c] / col_scale_max_);
    }
    return ConstMatrixView(xs_.data(), d.rows, d.cols, d.cols);
  }

  // y = gain * 2^(ex + ew) * (lsb * codes - offset * sum_r x[r]); with column scales 2^ew is
  // s_c forward and s_max transposed (the errors carry s_c / s_max).
  void Finish(int64_t m, Direction dir, int ex, const Chain& chain, const int64_t* codes,
              double gain, MatrixView y) const {
    const Side& s = side_[Index(dir)];
    const bool fwd = dir == Direction::kForward;
    const double scale =
        std::ldexp(1.0, ex + weight_exp_) * gain *
        (col_scale_.empty() || fwd ? 1.0 : static_cast<double>(col_scale_max_));
    const double lsb = chain.code_unit;
    for (int64_t i = 0; i < m; ++i) {
      int64_t xsum = 0;
      if (offset_ != 0) {
        const int32_t* xr = xq_.data() + i * s.k;
        for (int64_t r = 0; r < s.k; ++r) xsum += xr[r];
      }
      const double off = static_cast<double>(offset_) * static_cast<double>(xsum);
      float* row = y.Row(i);
      const int64_t* cr = codes + i * s.n;
      if (col_scale_.empty() || !fwd) {
        for (int64_t c = 0; c < s.n; ++c) {
          row[c] = static_cast<float>((lsb * static_cast<double>(cr[c]) - off) * scale);
        }
      } else {
        for (int64_t c = 0; c < s.n; ++c) {
          row[c] = static_cast<float>((lsb * static_cast<double>(cr[c]) - off) * scale *
                                      static_cast<double>(col_scale_[c]));
        }
      }
    }
  }

  // The exact product of the quantized operands (FP32 GEMM of the dequantized values).
  void Ideal(int64_t m, Direction dir, int ex, MatrixView y, const RunContext& ctx,
             double gain) {
    const Side& s = side_[Index(dir)];
    xdeq_.resize(static_cast<size_t>(m * s.k));
    const float sx = static_cast<float>(std::ldexp(1.0, ex));
    for (size_t i = 0; i < xdeq_.size(); ++i) xdeq_[i] = static_cast<float>(xq_[i]) * sx;
    kernels::GemmArgs g;
    g.trans_b = dir == Direction::kForward ? kernels::Trans::kNo : kernels::Trans::kYes;
    g.m = m;
    g.n = s.n;
    g.k = s.k;
    g.a = xdeq_.data();
    g.lda = s.k;
    g.b = wdeq_.data();
    g.ldb = cols_;
    g.c = y.data;
    g.ldc = y.ld;
    g.alpha = static_cast<float>(gain);
    kernels::fast::Gemm(g, ctx.pool);
  }

  // adc.follow_input_scale: a calibrated forward range is kept as a range of the layer's output
  // in real terms, fitted at the calibration's input scale 2^e_cal. When a later call's
  // per-tensor input exponent e differs, its integer inputs (for the same real values), and
  // with them every partial sum, are 2^(e_cal - e) times those at calibration (partial sums are
  // linear in the DAC inputs), so the range follows by the same power of two (at most the
  // design full scale). Without it, a batch whose largest activation crosses a power of two
  // converts its typical partial sums with half the calibrated resolution (pimqat: 2-5 points;
  // docs/analog.md, "PIM-QAT's gap to FP32"). Off by default: a range calibrated once and never
  // again (neuralpim) is better left in DAC units, where the dynamic input scale keeps the
  // partial sums in range as the activations grow. -1: the configured fraction.
  double TrackedFraction(int ex) const {
    if (!follow_input_scale_ || range_mode_ != RangeMode::kCalibrated || !calibrated_) {
      return -1.0;
    }
    return std::min(1.0, std::ldexp(fs_fraction_, cal_input_exp_ - ex));
  }

  // Searches the ADC full scale of direction dir (2^(-i/2) of the largest partial sum, i < 24)
  // for the least squared error against the ideal product on (up to 256 rows of) this input,
  // then (forward only) the least-squares output gain: gain = <y_adc, y_ideal> / <y_adc,
  // y_adc>. The rows are spread evenly over the call (kCalibrationRows); xq_ is restored
  // afterwards. The transposed read (adc.transposed_range: calibrated) gets its own range and
  // keeps the forward's gain (dx = g dy W^T).
  void Calibrate(int64_t m_all, int ex, uint64_t key, const RunContext& ctx, Direction dir) {
    const int64_t m = std::min(m_all, kCalibrationRows);
    const Side& s = side_[Index(dir)];
    std::vector<int32_t> all;
    if (m < m_all) {
      std::vector<int32_t> picked(static_cast<size_t>(m * s.k));
      for (int64_t i = 0; i < m; ++i) {
        const int64_t r = i * m_all / m;
        std::copy(xq_.begin() + r * s.k, xq_.begin() + (r + 1) * s.k, picked.begin() + i * s.k);
      }
      all.swap(xq_);
      xq_.swap(picked);
    }
    CalibrateOn(m, ex, key, ctx, dir);
    if (!all.empty()) xq_.swap(all);
  }

  void CalibrateOn(int64_t m, int ex, uint64_t key, const RunContext& ctx, Direction dir) {
    const bool fwd = dir == Direction::kForward;
    const Side& s = side_[Index(dir)];
    std::vector<float> ideal(static_cast<size_t>(m * s.n)), got(ideal.size());
    MatrixView iv{ideal.data(), m, s.n, s.n};
    Ideal(m, dir, ex, iv, ctx, 1.0);
    // What the chip does for it (Stage::kCalibration): the reference product in the digital
    // periphery, each candidate's read-out through the arrays, and one squared error per output
    // and candidate (a digital MAC).
    ActionCounts& cal = calibration_counts_;
    cal.Add("digital_macs", m * s.k * s.n);
    std::vector<int64_t> codes(ideal.size());
    double best_err = std::numeric_limits<double>::infinity();
    double best_frac = fwd ? fs_fraction_ : fs_fraction_t_;
    const double design = Resolve(dir, 1.0).design_full_scale;
    const bool search = fwd ? calibrate_range_ : calibrate_t_range_;
    for (int i = 0; search && i < kCalibrationSteps; ++i) {
      const double frac = std::ldexp(1.0, -i / 2) * (i % 2 == 1 ? std::sqrt(0.5) : 1.0);
      if (frac * design < 1.0) break;
      const Chain ch = Resolve(dir, frac);
      kernels::AnalogCounts kc;
      Run(m, dir, ch, key, codes.data(), ctx, kc);
      kc.AddTo(cal);
      cal.Add("digital_macs", m * s.n);
      // Column scales multiply a forward read's outputs; a transposed read's errors were scaled
      // once, before quantization (counted with that read), not per candidate.
      if (fwd && !col_scale_.empty()) cal.Add("out_scale_multiplies", m * s.n);
      MatrixView gv{got.data(), m, s.n, s.n};
      Finish(m, dir, ex, ch, codes.data(), 1.0, gv);
      double err = 0;
      for (size_t j = 0; j < got.size(); ++j) {
        const double d = static_cast<double>(got[j]) - ideal[j];
        err += d * d;
      }
      // An offset column must not clip: its clipped code is not a saturation, the digital
      // offset subtraction goes on growing, so the output falls as the true product rises and
      // training through it (STE) runs away (docs/analog.md, "Why PIM-QAT diverged"). Ranges
      // are tried largest first, so the full range (which cannot clip) is always a candidate.
      // Without noise every clipped conversion is at the top (partial sums are >= 0); with
      // noise the count also holds harmless clips at 0, so the plain least-squares choice stays.
      const bool noiseless = ch.readout.adc.sigma == 0 && ch.readout.nnsa_sigma == 0;
      const bool allowed = offset_ == 0 || !noiseless || kc.adc_clipped == 0;
      if (allowed && err < best_err) {
        best_err = err;
        best_frac = frac;
      }
    }
    if (!fwd) {
      fs_fraction_t_ = best_frac;
      return;
    }
    fs_fraction_ = best_frac;
    if (calibrate_range_) {
      cal_input_exp_ = ex;
      calibrated_ = true;
    }
    gain_ = 1.0;
    if (calibrate_gain_) {
      const Chain ch = Resolve(Direction::kForward, TrackedFraction(ex));
      kernels::AnalogCounts kc;
      Run(m, Direction::kForward, ch, key, codes.data(), ctx, kc);
      kc.AddTo(cal);
      cal.Add("digital_macs", 2 * m * s.n);  // <y_adc, y_ideal> and <y_adc, y_adc>
      if (!col_scale_.empty()) cal.Add("out_scale_multiplies", m * s.n);
      MatrixView gv{got.data(), m, s.n, s.n};
      Finish(m, Direction::kForward, ex, ch, codes.data(), 1.0, gv);
      double num = 0, den = 0;
      for (size_t j = 0; j < got.size(); ++j) {
        num += static_cast<double>(got[j]) * ideal[j];
        den += static_cast<double>(got[j]) * got[j];
      }
      if (den > 0 && num > 0) gain_ = num / den;
    }
  }

  MacroSpec spec_;
  Encoding encoding_ = Encoding::kOffset;
  int dac_bits_ = 1, cell_bits_ = 1, stored_bits_ = 8, polarities_ = 1, slices_ = 8;
  Dataflow dataflow_ = Dataflow::kA;
  int output_bits_ = 8;
  int adc_bits_cfg_ = 0;
  int bits_delta_ = 0;
  RangeMode range_mode_ = RangeMode::kFixed;
  double fs_fraction_ = 1.0;
  double fs_fraction_t_ = 1.0;  // the transposed read's range (adc.transposed_range)
  bool calibrate_t_range_ = false, pending_t_calibration_ = false;
  bool follow_input_scale_ = false;
  int cal_input_exp_ = 0;    // the forward input exponent of the last range calibration
  bool calibrated_ = false;  // a range calibration has run (TrackedFraction)
  double gain_ = 1.0;
  double inl_lsb_ = 0, thermal_sigma_ = 0, sinad_db_ = 0, program_sigma_ = 0, nnsa_sigma_ = 0;
  Readout readout_[2] = {Readout::kAnalog, Readout::kAnalog};
  bool skip_zero_cycles_ = true;
  bool pending_calibration_ = false, calibrate_range_ = false, calibrate_gain_ = false;
  ClipTally clip_tally_;
  ActionCounts calibration_counts_;  // since the last TakeCalibrationCounts
  KernelChoice kernel_ = KernelChoice::kFast;

  int64_t rows_ = 0, cols_ = 0;
  int weight_exp_ = 0;
  bool column_scale_ = false;       // weight_scale: column
  bool mse_input_scale_ = false;    // input_scale: mse
  bool gc_quantized_inputs_ = false;  // gradient_inputs: quantized
  int last_forward_exp_ = 0;          // the input exponent of the last forward read
  bool have_forward_exp_ = false;
  std::vector<int32_t> gq_;           // GC's input codes (gradient_inputs: quantized)
  std::vector<float> xg_;
  int64_t input_search_macs_ = 0;   // its search's digital MACs, counted at the next FP read
  static constexpr int kInputScaleCandidates = 4;
  std::vector<float> col_scale_;    // s_c per output column (empty: one 2^weight_exp_)
  float col_scale_max_ = 1.0f;      // max_c s_c
  int64_t offset_ = 0;
  std::vector<int32_t> wq_;
  std::vector<float> wdeq_;
  Side side_[2];
  bool transposed_ready_ = false;  // side_[1]'s levels and packing match the programmed codes
  int64_t last_step_ = -1;
  Stage last_stage_ = Stage::kForward;
  int64_t call_ = 0;
  std::vector<int32_t> xq_;
  std::vector<int64_t> yq_;
  std::vector<float> xdeq_;
};

PIM_REGISTER(Macro, AnalogCrossbarMacro, "analog_crossbar",
             "analog crossbar: DAC input cycles, sliced cells, per-column ADC chains (dataflows "
             "A/B/C), noise and non-linearity, read in both directions");

}  // namespace
}  // namespace pim
