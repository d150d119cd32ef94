// pimtrain's generators equal Random123's (the definition) bit for bit: the scalar Philox4x32
// (rng.h), the AES-NI and portable ARS-7 (ars.h), and the kernels' 8/16-lane Philox (through
// FillUniforms/FillNormals, which the analog tests check against rng.h's NoiseNormal).
#include "pimtrain/base/random123.h"

#include <gtest/gtest.h>

#include <vector>

#include "pimtrain/base/ars.h"
#include "pimtrain/base/rng.h"

namespace pim {
namespace {

// Keys and counters: edge values (0, all ones, one bit, the 32-bit halves' carries) and many
// splitmix64 draws.
std::vector<uint64_t> Values(int random, uint64_t salt) {
  std::vector<uint64_t> v = {0, 1, 2, 0xFFFFFFFFull, 0x100000000ull, 0x8000000000000000ull,
                             0xFFFFFFFFFFFFFFFFull, 0x7FFFFFFFFFFFFFFFull, 0x9E3779B97F4A7C15ull};
  for (int i = 0; i < random; ++i) v.push_back(MixKey(salt, static_cast<uint64_t>(i)));
  return v;
}

TEST(Random123Test, PhiloxEqualsRandom123OnManyKeysAndCounters) {
  int64_t n = 0;
  for (uint64_t key : Values(40, 1)) {
    for (uint64_t hi : Values(12, 2)) {
      for (uint64_t lo : Values(40, 3)) {
        ASSERT_EQ(Philox4x32(key, hi, lo), Philox4x32Random123(key, hi, lo))
            << std::hex << key << " " << hi << " " << lo;
        ++n;
      }
    }
  }
  EXPECT_GT(n, 40000);
  // CounterRng's blocks are Philox blocks of (key, stream, i).
  const CounterRng rng(12345, 6);
  for (uint64_t i = 0; i < 1000; ++i) EXPECT_EQ(rng.Block(i), Philox4x32Random123(12345, 6, i));
}

TEST(Random123Test, PhiloxMatchesTheRandom123KnownAnswers) {
  // Random123's kat_vectors for philox4x32_10: zero key and counter, and all ones.
  EXPECT_EQ(Philox4x32Random123(0, 0, 0),
            (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(Philox4x32Random123(~0ull, ~0ull, ~0ull),
            (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
}

TEST(Random123Test, ArsEqualsRandom123OnManyKeysAndCounters) {
  if (!kHaveArsRandom123) GTEST_SKIP() << "built without AES-NI: Random123 has no ARS here";
#if defined(__AES__) && R123_USE_AES_NI
  int64_t n = 0;
  for (uint64_t key : Values(40, 4)) {
    for (uint64_t hi : Values(12, 5)) {
      for (uint64_t lo : Values(40, 6)) {
        const auto want = Ars4x32Random123(key, hi, lo);
        ASSERT_EQ(Ars4x32(key, hi, lo), want) << std::hex << key << " " << hi << " " << lo;
        ASSERT_EQ(Ars4x32Portable(key, hi, lo), want) << std::hex << key << " " << hi << " " << lo;
        ++n;
      }
    }
  }
  EXPECT_GT(n, 40000);
#endif
}

}  // namespace
}  // namespace pim
