// ARS-7: a counter-based generator built from AES rounds (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC 2011, section 4.1). A block is a pure function of (key,
// counter), like Philox4x32 in rng.h, but on CPUs with AES instructions it costs about a third
// as much per word (vector AES, 16 words per instruction with VAES on 512-bit registers).
// Used where a kernel draws the most words per result: the sparse-tail streams of the analog
// read-out (kernels/analog.h). Construction: the 128-bit key k0 = (key, 0) steps by the Weyl
// constants (golden ratio, sqrt(3) - 1) per round, k_i = k_0 + i w in each 64-bit half;
// x = counter ^ k_0, six AES encryption rounds with k_1..k_6 and a last round with k_7.
// Salmon et al. report ARS with five rounds passing TestU01's BigCrush; seven is Random123's
// default margin. Bytes and words are little-endian, as the x86 AES instructions see them.
// This is Random123's ars4x32 with 7 rounds and the key {key, 0} (base/random123.h, the
// definition): equal bit for bit, tested in base/random123_test.cc. Kept as pimtrain's own code
// for the round-key table (ArsRoundKeys) the 512-bit VAES kernel broadcasts, and the portable
// AES for builds without AES-NI, where Random123 has no ARS.
#pragma once

#include <array>
#include <cstdint>

namespace pim {

constexpr int kArsRounds = 7;
constexpr uint64_t kArsWeylLo = 0x9E3779B97F4A7C15ull;  // 2^64 (golden ratio - 1)
constexpr uint64_t kArsWeylHi = 0xBB67AE8584CAA73Bull;  // 2^64 (sqrt(3) - 1)

// The round keys k_0 .. k_7 of a 64-bit key: {low 64 bits, high 64 bits} each.
inline std::array<std::array<uint64_t, 2>, kArsRounds + 1> ArsRoundKeys(uint64_t key) {
  std::array<std::array<uint64_t, 2>, kArsRounds + 1> k{};
  uint64_t lo = key, hi = 0;
  for (auto& rk : k) {
    rk = {lo, hi};
    lo += kArsWeylLo;
    hi += kArsWeylHi;
  }
  return k;
}

// Block (ctr_hi, ctr_lo) of key `key`: four 32-bit words (word 0 the low bits of ctr_lo's
// lane). AES instructions where the build has them, else a portable byte-wise AES.
std::array<uint32_t, 4> Ars4x32(uint64_t key, uint64_t ctr_hi, uint64_t ctr_lo);
// The same with the portable AES only (the tests compare the two).
std::array<uint32_t, 4> Ars4x32Portable(uint64_t key, uint64_t ctr_hi, uint64_t ctr_lo);
// One AES encryption round of the 16-byte state (FIPS-197 SubBytes, ShiftRows, MixColumns,
// AddRoundKey; `last` omits MixColumns), portable: the reference the tests check against FIPS-197.
void AesRoundPortable(uint8_t state[16], const uint8_t round_key[16], bool last);

}  // namespace pim
