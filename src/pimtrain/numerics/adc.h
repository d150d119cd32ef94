// ADC transfer of an analog PIM read-out chain (resolution, full-scale range, rounding, clipping,
// monotone non-linearity, additive Gaussian noise) and the coordinate-keyed Gaussian noise that
// feeds it. See docs/analog.md for the equations.
#pragma once

#include <cmath>
#include <cstdint>

namespace pim {

// One ADC as the read-out chain uses it. The input v is an analog partial sum in "unit" terms
// (one cell level times one DAC level counts 1). The converter maps
//
//   t  = (v + sigma z) / lsb                        (z ~ N(0, 1), one draw per conversion)
//   t' = tc + k tc (M - tc),  tc = clamp(t, 0, M)   (bow-shaped INL, monotone for k M < 1)
//   code = clamp(round_half_even(t'), 0, M),        M = 2^bits - 1
//
// and the conversion is "clipped" when t < -1/2 or t > M + 1/2 (the ideal converter would have
// produced a code outside [0, M]). The arithmetic is float, operation by operation, so the
// scalar form below and the 8-lane form in kernels/fast/analog.cc round identically.
struct AdcTransfer {
  int bits = 8;
  float lsb = 1.0f;      // partial-sum units per code
  float inv_lsb = 1.0f;  // 1 / lsb, rounded once (multiplication by it is the conversion)
  float max_code = 255.0f;
  float inl_k = 0.0f;    // bow non-linearity: peak INL (codes) = k M^2 / 4 at mid-scale
  float sigma = 0.0f;    // Gaussian noise at the input, partial-sum units (thermal + SINAD)

  struct Result {
    int32_t code;
    bool clipped;
  };
  Result Convert(float v, float z) const {
    const float x = sigma != 0.0f ? v + sigma * z : v;
    const float t = x * inv_lsb;
    const bool clipped = t < -0.5f || t > max_code + 0.5f;
    float tc = std::fmin(std::fmax(t, 0.0f), max_code);
    if (inl_k != 0.0f) {
      const float p = inl_k * tc;
      const float d = max_code - tc;
      tc = tc + p * d;
    }
    float c = std::nearbyint(tc);
    c = std::fmin(std::fmax(c, 0.0f), max_code);
    return {static_cast<int32_t>(c), clipped};
  }
};

// Builds an ADC transfer for `bits` over a full-scale input range of `full_scale` partial-sum
// units: lsb = full_scale / (2^bits - 1), but never finer than one unit (an ADC resolving
// below the partial sum's integer step adds nothing; with enough bits the read-out is exact).
// `inl_lsb`: peak integral non-linearity in LSB (0: linear; must be < M / 4 to stay monotone).
// `sigma`: input-referred noise in partial-sum units.
AdcTransfer MakeAdcTransfer(int bits, double full_scale, double inl_lsb, double sigma);

// SINAD-based lumped noise as Neural-PIM models its read-out: sigma = max|y| / 10^(SINAD/20).
double SinadSigma(double max_abs, double sinad_db);

// ---- Coordinate-keyed Gaussian noise ------------------------------------------------------
// Normal number i of stream (key, stream) is a pure function of (key, stream, i).
// Philox blocks are used in groups of 8 consecutive counters (g*8 .. g*8+7); each block gives
// four 32-bit words, each word two 16-bit uniforms, so a group gives 64 normals, laid out so that
// an 8-lane SIMD Philox writes them in index order:
//   i = 64 g + 32 half + 8 word + lane  ->  16-bit half `half` of word `word` of block 8 g + lane.
// A 16-bit uniform h maps to z = Phi^-1(p), p = (h + 1/2) / 65536 (the inverse normal CDF at the
// midpoint of h's probability cell, except the outermost cells, below): in the central 95 %
// (kGaussTail <= h < 65536 - kGaussTail) by Acklam's rational approximation evaluated in float,
// t = p - 1/2, z = t P(t^2) / Q(t^2); in the tails from a table of exact quantiles. Every step is
// a single IEEE float operation, so the SIMD version in kernels/fast/analog.cc is bit-identical.
// The outermost kGaussRefine cells at each end are not cut at a midpoint: there the draw is
// continuous (no truncation at 4.3 sigma, which silenced noise below ~0.116 LSB): a second,
// 64-bit uniform u places it inside its cell, z = Phi^-1((c + (u + 1/2) 2^-64) / 65536) for the
// lower cells c = h, mirrored (z -> -z, c = 65535 - h) for the upper ones, in double (tails reach
// -+10.3 sigma: the mass beyond, 2^-81 per draw, is below any run's reach). u is words 0 and 1
// of Philox4x32(key, stream ^ kRefineStream, i). docs/analog.md, "Noise keyed by coordinates".
constexpr uint32_t kGaussTail = 1600;  // p < 0.0245: outside Acklam's central region
constexpr uint32_t kGaussRefine = 64;  // refined cells per end (p < 2^-10)
constexpr uint64_t kRefineStream = uint64_t{1} << 63;
inline bool RefinedCell(uint32_t h) { return h < kGaussRefine || h >= 65536 - kGaussRefine; }
// The midpoint value of cell h; for RefinedCell(h) only the cell's label (the quantile table's
// value), not the draw: that is GaussianRefined(h, u).
float GaussianFrom16(uint32_t h);
float GaussianRefined(uint32_t h, uint64_t u);
// The 64-bit uniform placing draw i of (key, stream) inside a refined cell.
uint64_t NoiseRefineWord(uint64_t key, uint64_t stream, uint64_t i);
// The standard normal quantile Phi^-1(p) in double (accurate to double rounding; -inf at 0).
double GaussianQuantile(double p);
// z of a 16-bit draw h with refinement word u (used only when RefinedCell(h)).
inline float GaussianDraw(uint32_t h, uint64_t u) {
  return RefinedCell(h) ? GaussianRefined(h, u) : GaussianFrom16(h);
}
float NoiseNormal(uint64_t key, uint64_t stream, uint64_t i);
// The 16-bit uniform h behind NoiseNormal(key, stream, i) (its cell).
uint32_t NoiseUniform16(uint64_t key, uint64_t stream, uint64_t i);

struct GaussianTable {
  float tail[2 * kGaussTail];  // h < kGaussTail at [h]; h >= 65536 - kGaussTail at [h - 63936]
};
const GaussianTable& GetGaussianTable();
// Acklam's central coefficients as floats: z = t * (((((a0 r + a1) r + a2) r + a3) r + a4) r +
// a5) / (((((b0 r + b1) r + b2) r + b3) r + b4) r + 1), r = t * t.
extern const float kGaussA[6];
extern const float kGaussB[5];

// ---- Dataflow formulas (Neural-PIM, IEEE TC 71(9) 2022, Sec. 3; spec section 5) -----------
// P_I input bits, P_W weight bits (stored per polarity), P_R bits per cell, P_D DAC bits,
// rows = 2^N word lines summed by one column, P_O output bits.
enum class Dataflow { kA, kB, kC };  // A: ISAAC/PRIME, B: CASCADE, C: Neural-PIM
struct DataflowFigures {
  int adc_bits = 0;                  // resolution the dataflow needs (A, B) or uses (C)
  int64_t conversions_per_group = 0; // ADC conversions per weight group per row block
  int64_t input_cycles = 0;          // ceil(P_I / P_D) for all three
};
// A: bits = P_R + P_D + N (P_R > 1 and P_D > 1), else P_R + P_D - 1 + N;
//    conversions = ceil(P_I/P_D) * ceil(P_W/P_R).
// B: bits = A's + ceil(log2 ceil(P_I/P_D)); conversions = ceil(P_I/P_D) + ceil(P_W/P_R) - 1.
// C: bits = P_O; conversions = 1.
// N = ceil(log2 rows).
DataflowFigures DataflowFormula(Dataflow d, int input_bits, int weight_bits, int cell_bits,
                                int dac_bits, int64_t rows, int output_bits);

}  // namespace pim
