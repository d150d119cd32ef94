// Counter-based random numbers (Philox-4x32-10): a value is a pure function of (key, counter),
// so results never depend on thread count or loop order. Philox4x32 here is pimtrain's own
// inline twin of Random123's philox4x32 (the definition, base/random123.h), equal bit for bit
// (base/random123_test.cc); it stays so that kernels/fast can mirror it lane for lane.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace pim {

// Philox-4x32 with 10 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011). key: 64 bits; counter: 128 bits. Output: four 32-bit words.
inline std::array<uint32_t, 4> Philox4x32(uint64_t key, uint64_t ctr_hi, uint64_t ctr_lo) {
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  uint32_t c0 = static_cast<uint32_t>(ctr_lo), c1 = static_cast<uint32_t>(ctr_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(ctr_hi), c3 = static_cast<uint32_t>(ctr_hi >> 32);
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

// Mixes several integers into one 64-bit key (splitmix64 finalizer chain).
inline uint64_t MixKey(uint64_t a, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0) {
  auto mix = [](uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(mix(a) ^ b) ^ c) ^ d);
}

// A stream keyed by `key`: value i is a pure function of (key, i). Cheap to construct.
class CounterRng {
 public:
  explicit CounterRng(uint64_t key, uint64_t stream = 0) : key_(key), stream_(stream) {}

  // Four uniform 32-bit words for counter `i`.
  std::array<uint32_t, 4> Block(uint64_t i) const { return Philox4x32(key_, stream_, i); }
  // Uniform in [0, 1) with 24 bits, word w (0..3) of block i.
  static float ToUnitFloat(uint32_t v) { return static_cast<float>(v >> 8) * (1.0f / 16777216.0f); }
  static double ToUnitDouble(uint32_t hi, uint32_t lo) {
    return static_cast<double>((static_cast<uint64_t>(hi) << 21) ^ (lo >> 11)) *
           (1.0 / 9007199254740992.0);
  }
  float Uniform(uint64_t i) const { return ToUnitFloat(Block(i)[0]); }
  // Standard normal via Box-Muller on one block.
  float Normal(uint64_t i) const {
    auto b = Block(i);
    double u1 = (static_cast<double>(b[0]) + 1.0) * (1.0 / 4294967297.0);
    double u2 = static_cast<double>(b[1]) * (1.0 / 4294967296.0);
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  // Uniform integer in [0, n) (n > 0), 64-bit multiply-shift (bias < 2^-32 for n < 2^32).
  uint64_t Below(uint64_t i, uint64_t n) const {
    auto b = Block(i);
    uint64_t r = (static_cast<uint64_t>(b[0]) << 32) | b[1];
    return static_cast<uint64_t>((static_cast<unsigned __int128>(r) * n) >> 64);
  }

 private:
  uint64_t key_;
  uint64_t stream_;
};

}  // namespace pim
