// Pre-alignment of floating-point vectors to signed fixed-point mantissas with one shared
// exponent (ISSCC 2025 14.5, "signed fixed-point mantissa encoding with vector-wise
// pre-alignment"; docs/fp_digital.md, "Pre-alignment").
//
// Element i of a vector holds value_i = (-1)^s_i * m_i * 2^(E_i + o_i - M): m_i its significand
// (hidden bit included, M mantissa bits), E_i its unbiased exponent, o_i an optional exponent
// offset (0 unless the caller folds a power-of-two factor into the element). With the shared
// exponent E* = max_i (E_i + o_i) over the nonzero elements (vector-wise), or a given tensor
// exponent (layer-wise), and a datapath of W bits (two's complement, sign included):
//
//   t   = E* - (W - 2)                        (LSB exponent: the E* binade fills W-1 bits)
//   s_i = t - (E_i + o_i - M) = (E* - E_i - o_i) + (M + 2 - W)          (right shift)
//   a_i = (-1)^s_i * min(R(m_i * 2^-s_i), 2^(W-1) - 1),   value_i ~= a_i * 2^t
//
// R truncates (the shifted-out bits are lost) or rounds to nearest even with a guard bit and a
// sticky bit. s_i <= 0 (W > M + 2, or an element above a layer-wise E*) shifts left, exactly.
#pragma once

#include <cstdint>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/numerics/formats.h"

namespace pim::fp {

enum class AlignRounding { kTruncate, kNearestEven };

// The pre-alignment unit's events (summed over calls).
// The counters AlignCounts::AddTo adds (name, unit, stages, meaning).
const CounterSet& AlignCounters();

struct AlignCounts {
  int64_t exponent_compares = 0;  // elements entering a max-exponent search
  int64_t alignment_shifts = 0;   // nonzero mantissas shifted by a nonzero amount
  int64_t shifted_out_bits = 0;   // significand bit positions pushed past the LSB (lost)
  int64_t saturated = 0;          // aligned magnitudes clamped to 2^(W-1) - 1

  bool operator==(const AlignCounts&) const = default;
  AlignCounts& operator+=(const AlignCounts& o) {
    exponent_compares += o.exponent_compares;
    alignment_shifts += o.alignment_shifts;
    shifted_out_bits += o.shifted_out_bits;
    saturated += o.saturated;
    return *this;
  }
  // Adds the fields under their snake_case names ("alignment_saturations" for `saturated`).
  void AddTo(ActionCounts& counts) const;
};

// The vector-wise shared exponent: max over the nonzero finite elements of E_i + o_i (o may be
// null: all 0). Returns false (and leaves *e) when the vector has none. Counts `len` compares.
bool SharedExponent(Format f, const uint32_t* codes, int64_t len, int64_t stride, const int* o,
                    int* e, AlignCounts& counts);

// Aligns one vector of floating-point codes (finite or zero; len elements, `stride` apart) to
// W-bit mantissas with the shared exponent `shared_exp` (see the header comment), written to
// out[i * out_stride]. Returns t, the LSB exponent. Does not count compares (SharedExponent
// does); counts shifts, shifted-out bits and saturations.
int AlignVector(Format f, const uint32_t* codes, int64_t len, int64_t stride, const int* o,
                int shared_exp, int bits, AlignRounding r, int32_t* out, int64_t out_stride,
                AlignCounts& counts);

// The power-of-two tensor scale s (an exponent) that puts max_abs at the top of the format's
// range before encoding: the largest s with max_abs * 2^s <= max_finite (0 for max_abs 0 or
// non-finite). FP8 training recipes scale per tensor like this; the scale is undone exactly
// after the MAC, so it only decides which values fall out of the range.
int TensorScaleExponent(Format f, double max_abs);

}  // namespace pim::fp
