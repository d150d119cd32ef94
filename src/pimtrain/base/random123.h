// The reference counter-based generators: Random123's Philox-4x32-10 and ARS-7 (Debian
// librandom123-dev; Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
// definition that pimtrain's own Philox4x32 (rng.h), Ars4x32 (ars.h) and their vector twins in
// kernels/fast are tested against bit for bit (base/random123_test.cc). Same arguments as the
// twins: a 64-bit key and a 128-bit counter (ctr_hi, ctr_lo), four 32-bit words out.
#pragma once

#include <Random123/philox.h>

#include <array>
#include <cstdint>
#if defined(__AES__)
#include <Random123/ars.h>
#endif

namespace pim {

// Philox-4x32-10: counter words {ctr_lo low, ctr_lo high, ctr_hi low, ctr_hi high}, key words
// {key low, key high}.
inline std::array<uint32_t, 4> Philox4x32Random123(uint64_t key, uint64_t ctr_hi,
                                                   uint64_t ctr_lo) {
  const r123::Philox4x32::ctr_type c = {{static_cast<uint32_t>(ctr_lo),
                                         static_cast<uint32_t>(ctr_lo >> 32),
                                         static_cast<uint32_t>(ctr_hi),
                                         static_cast<uint32_t>(ctr_hi >> 32)}};
  const r123::Philox4x32::key_type k = {{static_cast<uint32_t>(key),
                                         static_cast<uint32_t>(key >> 32)}};
  const auto r = r123::Philox4x32()(c, k);
  return {r[0], r[1], r[2], r[3]};
}

#if defined(__AES__) && R123_USE_AES_NI
constexpr bool kHaveArsRandom123 = true;
// ARS-7 (Random123's ars4x32 with its default 7 rounds): the 128-bit key {key, 0} and the
// counter in the same word order as Philox above.
inline std::array<uint32_t, 4> Ars4x32Random123(uint64_t key, uint64_t ctr_hi, uint64_t ctr_lo) {
  const r123::ARS4x32::ctr_type c = {{static_cast<uint32_t>(ctr_lo),
                                      static_cast<uint32_t>(ctr_lo >> 32),
                                      static_cast<uint32_t>(ctr_hi),
                                      static_cast<uint32_t>(ctr_hi >> 32)}};
  const r123::ARS4x32::ukey_type uk = {{static_cast<uint32_t>(key),
                                        static_cast<uint32_t>(key >> 32), 0u, 0u}};
  const auto r = r123::ARS4x32()(c, r123::ARS4x32::key_type(uk));
  return {r[0], r[1], r[2], r[3]};
}
#else
constexpr bool kHaveArsRandom123 = false;  // Random123's ARS needs AES-NI
#endif

}  // namespace pim
