// ARS-7 (base/ars.h): the portable AES round against FIPS-197's AES-128 example, and the
// instruction version of ARS against the portable one.
#include "pimtrain/base/ars.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <set>

#include "pimtrain/base/rng.h"

namespace pim {
namespace {

// FIPS-197 AES-128 with the standard key schedule, built on AesRoundPortable.
std::array<uint8_t, 16> Aes128(const std::array<uint8_t, 16>& in, const std::array<uint8_t, 16>& key) {
  // Key expansion (FIPS-197 5.2): the S-box from one SubBytes round of a zero key.
  auto sub = [](uint8_t b) {
    uint8_t s[16] = {}, z[16] = {};
    s[0] = b;  // row 0 does not move in ShiftRows
    AesRoundPortable(s, z, true);
    return s[0];
  };
  uint8_t w[176];
  for (int i = 0; i < 16; ++i) w[i] = key[i];
  uint8_t rcon = 1;
  for (int i = 16; i < 176; i += 4) {
    uint8_t t[4] = {w[i - 4], w[i - 3], w[i - 2], w[i - 1]};
    if (i % 16 == 0) {
      const uint8_t t0 = t[0];
      t[0] = static_cast<uint8_t>(sub(t[1]) ^ rcon);
      t[1] = sub(t[2]);
      t[2] = sub(t[3]);
      t[3] = sub(t0);
      rcon = static_cast<uint8_t>((rcon << 1) ^ ((rcon >> 7) * 0x1b));
    }
    for (int k = 0; k < 4; ++k) w[i + k] = static_cast<uint8_t>(w[i - 16 + k] ^ t[k]);
  }
  std::array<uint8_t, 16> s{};
  for (int i = 0; i < 16; ++i) s[i] = static_cast<uint8_t>(in[i] ^ w[i]);
  for (int r = 1; r <= 10; ++r) AesRoundPortable(s.data(), w + 16 * r, r == 10);
  return s;
}

TEST(ArsTest, PortableAesRoundGivesTheFips197Example) {
  // FIPS-197 appendix C.1: AES-128.
  std::array<uint8_t, 16> in{}, key{};
  for (int i = 0; i < 16; ++i) {
    in[i] = static_cast<uint8_t>(0x11 * i);
    key[i] = static_cast<uint8_t>(i);
  }
  const std::array<uint8_t, 16> want = {0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30,
                                        0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5, 0x5a};
  EXPECT_EQ(Aes128(in, key), want);
}

// In a build without AES instructions both calls are the portable code and the first check
// holds trivially; the FIPS-197 test above still checks that code, and the avalanche checks
// below hold either way.
TEST(ArsTest, InstructionsAndPortableCodeGiveTheSameWords) {
  std::set<uint32_t> seen;
  for (uint64_t i = 0; i < 2000; ++i) {
    const uint64_t key = MixKey(i), hi = MixKey(i, 1), lo = i < 1000 ? i : MixKey(i, 2);
    const auto a = Ars4x32(key, hi, lo), b = Ars4x32Portable(key, hi, lo);
    ASSERT_EQ(a, b) << "block " << i;
    seen.insert(a.begin(), a.end());
  }
  // A generator's words, not a constant: 8000 words nearly all distinct.
  EXPECT_GT(seen.size(), 7990u);
  // Neighbouring counters and keys give unrelated blocks: about half the bits differ.
  int flips = 0;
  for (uint64_t i = 0; i < 256; ++i) {
    const auto a = Ars4x32(7, 3, i), b = Ars4x32(7, 3, i + 1), c = Ars4x32(8, 3, i);
    for (int w = 0; w < 4; ++w) {
      flips += __builtin_popcount(a[w] ^ b[w]) + __builtin_popcount(a[w] ^ c[w]);
    }
  }
  EXPECT_NEAR(flips / (256.0 * 2 * 128), 0.5, 0.02);
}

}  // namespace
}  // namespace pim
