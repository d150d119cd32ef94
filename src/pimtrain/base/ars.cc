// ARS-7 (ars.h): the AES-NI version and a portable one that gives the same words.
#include "pimtrain/base/ars.h"

#include <cstring>

#if defined(__AES__)
#include <immintrin.h>
#endif

namespace pim {
namespace {

constexpr uint8_t XTime(uint8_t a) {
  return static_cast<uint8_t>((a << 1) ^ ((a >> 7) * 0x1b));
}
constexpr uint8_t GfMul(uint8_t a, uint8_t b) {
  uint8_t p = 0;
  for (int i = 0; i < 8; ++i) {
    if (b & 1) p ^= a;
    a = XTime(a);
    b >>= 1;
  }
  return p;
}
constexpr uint8_t Rotl8(uint8_t x, int s) {
  return static_cast<uint8_t>((x << s) | (x >> (8 - s)));
}
// The AES S-box from its definition: the inverse in GF(2^8) (x^254; 0 -> 0), then the affine map.
constexpr std::array<uint8_t, 256> MakeSbox() {
  std::array<uint8_t, 256> s{};
  for (int x = 0; x < 256; ++x) {
    uint8_t inv = 1, base = static_cast<uint8_t>(x);
    for (int e = 254; e > 0; e >>= 1) {
      if (e & 1) inv = GfMul(inv, base);
      base = GfMul(base, base);
    }
    if (x == 0) inv = 0;
    s[x] = static_cast<uint8_t>(inv ^ Rotl8(inv, 1) ^ Rotl8(inv, 2) ^ Rotl8(inv, 3) ^
                                Rotl8(inv, 4) ^ 0x63);
  }
  return s;
}
constexpr std::array<uint8_t, 256> kSbox = MakeSbox();

void Store128(uint64_t lo, uint64_t hi, uint8_t* out) {
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<uint8_t>(lo >> (8 * i));
    out[8 + i] = static_cast<uint8_t>(hi >> (8 * i));
  }
}

std::array<uint32_t, 4> Words(const uint8_t* s) {
  std::array<uint32_t, 4> w{};
  for (int i = 0; i < 4; ++i) {
    w[i] = static_cast<uint32_t>(s[4 * i]) | static_cast<uint32_t>(s[4 * i + 1]) << 8 |
           static_cast<uint32_t>(s[4 * i + 2]) << 16 | static_cast<uint32_t>(s[4 * i + 3]) << 24;
  }
  return w;
}

}  // namespace

void AesRoundPortable(uint8_t state[16], const uint8_t round_key[16], bool last) {
  // State byte 4 c + r is row r of column c. SubBytes and ShiftRows (row r rotates left by r).
  uint8_t t[16];
  for (int c = 0; c < 4; ++c) {
    for (int r = 0; r < 4; ++r) t[4 * c + r] = kSbox[state[4 * ((c + r) & 3) + r]];
  }
  if (!last) {
    for (int c = 0; c < 4; ++c) {
      const uint8_t a0 = t[4 * c], a1 = t[4 * c + 1], a2 = t[4 * c + 2], a3 = t[4 * c + 3];
      t[4 * c] = static_cast<uint8_t>(XTime(a0) ^ XTime(a1) ^ a1 ^ a2 ^ a3);
      t[4 * c + 1] = static_cast<uint8_t>(a0 ^ XTime(a1) ^ XTime(a2) ^ a2 ^ a3);
      t[4 * c + 2] = static_cast<uint8_t>(a0 ^ a1 ^ XTime(a2) ^ XTime(a3) ^ a3);
      t[4 * c + 3] = static_cast<uint8_t>(XTime(a0) ^ a0 ^ a1 ^ a2 ^ XTime(a3));
    }
  }
  for (int i = 0; i < 16; ++i) state[i] = static_cast<uint8_t>(t[i] ^ round_key[i]);
}

std::array<uint32_t, 4> Ars4x32Portable(uint64_t key, uint64_t ctr_hi, uint64_t ctr_lo) {
  const auto rk = ArsRoundKeys(key);
  uint8_t s[16], k[16];
  Store128(ctr_lo, ctr_hi, s);
  Store128(rk[0][0], rk[0][1], k);
  for (int i = 0; i < 16; ++i) s[i] ^= k[i];
  for (int r = 1; r <= kArsRounds; ++r) {
    Store128(rk[r][0], rk[r][1], k);
    AesRoundPortable(s, k, r == kArsRounds);
  }
  return Words(s);
}

std::array<uint32_t, 4> Ars4x32(uint64_t key, uint64_t ctr_hi, uint64_t ctr_lo) {
#if defined(__AES__)
  const auto rk = ArsRoundKeys(key);  // the one key schedule, shared with the portable code
  auto round_key = [&](int r) {
    return _mm_set_epi64x(static_cast<int64_t>(rk[r][1]), static_cast<int64_t>(rk[r][0]));
  };
  __m128i x = _mm_xor_si128(
      _mm_set_epi64x(static_cast<int64_t>(ctr_hi), static_cast<int64_t>(ctr_lo)), round_key(0));
  for (int r = 1; r < kArsRounds; ++r) x = _mm_aesenc_si128(x, round_key(r));
  x = _mm_aesenclast_si128(x, round_key(kArsRounds));
  std::array<uint32_t, 4> w;
  std::memcpy(w.data(), &x, sizeof(w));
  return w;
#else
  return Ars4x32Portable(key, ctr_hi, ctr_lo);
#endif
}

}  // namespace pim
