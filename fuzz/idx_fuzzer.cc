// libFuzzer target: the IDX reader, raw and gzip (mode byte + file); see harness.h.
#include <cstddef>
#include <cstdint>

#include "harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pim::fuzz::IdxInput(data, size);
  return 0;
}
