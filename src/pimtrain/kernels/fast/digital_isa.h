// The ISA variants of the digital macros' elementwise fast kernels (fp_dcim_encode.cc: FP
// encode and pre-alignment; bitserial_quantize.cc: power-of-two quantization, 16-bit words,
// transposes) and their one dispatch table (digital_dispatch.cc). Each variant is a loop body
// over whole vectors that starts at element i and returns where it stopped; the drivers run the
// table's widest variant, then the AVX2 one, then a scalar tail, all with the same integer and
// float operations (so the same values and counts for any split). Private to kernels/fast.
#pragma once

#include <cstdint>
#include <limits>

#include "pimtrain/kernels/bitserial_quantize.h"

namespace pim::kernels::fast::internal {

constexpr int32_t kNoExp = std::numeric_limits<int32_t>::min();

// Pass 1 of the FP encoder (RoundToFormat in fp_dcim_encode.cc): constants and operands.
struct RoundArgs {
  const float* x = nullptr;
  float scale = 1;       // 2^s
  float magic = 0;       // 2^(emin - M + 23): adding and subtracting it rounds to the quantum
  uint32_t half = 0;     // below half an ULP of the format, in float mantissa units
  uint32_t keep = 0;     // the float bits the format keeps
  uint32_t emin_bits = 0;  // bits of 2^emin (below: the subnormal quantum)
  uint32_t max_bits = 0;   // bits of the largest finite value (saturation)
  int drop = 0;            // float mantissa bits below the format's
  int emin = 0;
  const int32_t* o = nullptr;  // per-element exponent offsets (null: 0)
  uint32_t* r = nullptr;       // out: rounded float bits
  int32_t* e = nullptr;        // out (null: not written): format exponent + offset
  bool want_max = false;       // fold the maximum exponent into RoundAcc::m
  int32_t* col_max = nullptr;  // the maximum per position across calls (null: none)
};
struct RoundAcc {
  int64_t bad = 0;      // elements the bit arithmetic does not cover
  int32_t m = kNoExp;   // largest exponent over the nonzero, covered results
};

// Pass 2 (AlignRow in fp_dcim_encode.cc).
struct AlignArgs {
  const uint32_t* r = nullptr;
  const int32_t* o = nullptr;
  const int32_t* t = nullptr;  // per-element LSB exponents (null: t_all)
  int32_t t_all = 0;
  const int32_t* shared = nullptr;  // per-element shared exponents (null: shared_all)
  int32_t shared_all = 0;
  int32_t max_mag = 0;   // 2^(W-1) - 1
  int32_t lost_cap = 0;  // M + 1
  int32_t bias = 0;      // M + 2 - W
  int32_t emin = 0;
  bool nearest = false;
  int32_t* out = nullptr;
  // Optional side outputs of the row (fused: at most 4 nibbles).
  float* f32 = nullptr;
  int32_t* col_nz = nullptr;  // nibbles x n_total, incremented
  int64_t n_total = 0;
  int pw = 0;  // nibbles counted (0: no side outputs)
};
struct AlignAcc {
  int64_t shifts = 0, lost = 0, sat = 0;
  int64_t row_nz[4] = {0, 0, 0, 0};
};

// Power-of-two quantization of one row (bitserial_quantize.cc), and the 16-bit word pass of
// the weights (stored words and the rounded forward read).
struct WordArgs {
  int16_t* stored = nullptr;
  int16_t* forward = nullptr;  // null: no rounded forward copy
  int shift = 0;
  int32_t half = 0, fmax = 0;
  bool is_signed = true;
};

struct DigitalKernels {
  const char* isa;  // "avx512" or "avx2"
  // FP encoder, 16-lane bodies (null: none; the AVX2 bodies follow in any case).
  int64_t (*round_body)(const RoundArgs& a, int64_t i, int64_t n, RoundAcc& acc);
  int64_t (*align_body)(const AlignArgs& a, int64_t i, int64_t n, AlignAcc& acc);
  // Quantizer, 16-lane bodies (null: none).
  int64_t (*quantize_body)(const PowerOfTwoQuantizer& q, const float* v, int64_t i, int64_t n,
                           int32_t* out);
  int64_t (*words_body)(const PowerOfTwoQuantizer& q, const float* v, int64_t i, int64_t n,
                        const WordArgs& w);
  // Quantizes rows r0..r0+7, columns c0.. of v (ld) in 8 x 16 blocks and stores them transposed
  // into q (rows_out apart); returns the first column not done (null: none).
  int64_t (*quantize_transposed_body)(const PowerOfTwoQuantizer& q, const float* v, int64_t ld,
                                      int64_t c0, int64_t c_end, int64_t rows_out, int64_t r0,
                                      int32_t* out);
  int64_t (*dequantize_words_body)(const int16_t* src, bool is_signed, float scale, int64_t i,
                                   int64_t n, float* out);
  // max |v| (max(v, 0) unsigned) over the finite elements of a row.
  float (*max_for_scale_row)(const float* row, int64_t n, Signedness sign);
};
const DigitalKernels& Digital();

// The variants (each file's own; digital_dispatch.cc picks).
int64_t RoundBodyAvx2(const RoundArgs& a, int64_t i, int64_t n, RoundAcc& acc);
int64_t AlignBodyAvx2(const AlignArgs& a, int64_t i, int64_t n, AlignAcc& acc);
int64_t QuantizeBodyAvx2(const PowerOfTwoQuantizer& q, const float* v, int64_t i, int64_t n,
                         int32_t* out);
int64_t WordsBodyAvx2(const PowerOfTwoQuantizer& q, const float* v, int64_t i, int64_t n,
                      const WordArgs& w);
int64_t QuantizeTransposedBodyAvx2(const PowerOfTwoQuantizer& q, const float* v, int64_t ld,
                                   int64_t c0, int64_t c_end, int64_t rows_out, int64_t r0,
                                   int32_t* out);
int64_t DequantizeWordsBodyAvx2(const int16_t* src, bool is_signed, float scale, int64_t i,
                                int64_t n, float* out);
float MaxForScaleRowAvx2(const float* row, int64_t n, Signedness sign);
#if defined(__AVX512F__) && defined(__AVX512BW__)
int64_t RoundBodyAvx512(const RoundArgs& a, int64_t i, int64_t n, RoundAcc& acc);
int64_t AlignBodyAvx512(const AlignArgs& a, int64_t i, int64_t n, AlignAcc& acc);
int64_t QuantizeBodyAvx512(const PowerOfTwoQuantizer& q, const float* v, int64_t i, int64_t n,
                           int32_t* out);
int64_t WordsBodyAvx512(const PowerOfTwoQuantizer& q, const float* v, int64_t i, int64_t n,
                        const WordArgs& w);
int64_t QuantizeTransposedBodyAvx512(const PowerOfTwoQuantizer& q, const float* v, int64_t ld,
                                     int64_t c0, int64_t c_end, int64_t rows_out, int64_t r0,
                                     int32_t* out);
int64_t DequantizeWordsBodyAvx512(const int16_t* src, bool is_signed, float scale, int64_t i,
                                  int64_t n, float* out);
float MaxForScaleRowAvx512(const float* row, int64_t n, Signedness sign);
#endif

}  // namespace pim::kernels::fast::internal
