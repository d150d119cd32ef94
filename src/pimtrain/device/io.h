// The aihwkit-style read path of an analog tile (spec section 3, in its order): noise
// management, DAC quantization and clip, the MVM, IR drop, weight noise, output noise, ADC,
// bound management, rescaling. `pim.macro.io`; `io: {}` is the spec's defaults.
#pragma once

#include <cstdint>
#include <memory>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/config.h"
#include "pimtrain/base/matrix_view.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/schema.h"

namespace pim {

enum class WeightNoiseType { kAdditiveConstant, kPcmRead };
enum class NoiseManagement { kAbsMax, kNone };
enum class BoundManagement { kIterative, kNone };

struct IoParams {
  double inp_res = 1.0 / 126, inp_bound = 1.0, inp_noise = 0;
  double out_res = 1.0 / 510, out_bound = 12, out_noise = 0.06;
  double w_noise = 0;
  WeightNoiseType w_noise_type = WeightNoiseType::kAdditiveConstant;
  NoiseManagement noise_management = NoiseManagement::kAbsMax;
  double nm_thres = 0;
  BoundManagement bound_management = BoundManagement::kIterative;
  double ir_drop = 0;
  bool is_perfect = false;  // no quantization, noise or bounds: y = x W exactly
};

// The `io` section's schema (spec defaults) and its parsed form.
std::shared_ptr<Schema> IoSchema();
IoParams ParseIo(const ConfigNode& io);

// y = read(x W) (forward, W rows x cols row-major, x m x rows) or read(x W^T) (transposed,
// x m x cols). Bound management applies forward only. Noise keyed by `key`: draw
// NoiseNormal(MixKey(key, pass, stage), 0, sample x outputs + output) (numerics/adc.h; stage 1
// input, 2 weight, 3 output noise; pass: the bound-management repeat). Counts
// dac_conversions, adc_conversions, cell_reads, input_cycles (one per input vector and array
// tile, `tiles`), bm_repeats.
void AnalogRead(const IoParams& io, ConstMatrixView x, const float* w, int64_t rows, int64_t cols,
                bool transposed, uint64_t key, int64_t tiles, MatrixView y, ThreadPool* pool,
                ActionCounts& counts);
// The same read with the element stages (NM scale, DAC, output noise, ADC, clip) one element at
// a time and one NoiseNormal call per draw: the definition AnalogRead's vector loops are tested
// against bit for bit (same GEMM for the MVM).
void AnalogReadRef(const IoParams& io, ConstMatrixView x, const float* w, int64_t rows,
                   int64_t cols, bool transposed, uint64_t key, int64_t tiles, MatrixView y,
                   ThreadPool* pool, ActionCounts& counts);

}  // namespace pim
