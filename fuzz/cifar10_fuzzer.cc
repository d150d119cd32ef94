// libFuzzer target: the CIFAR-10 reader via the dataset registry (mode byte + file); see harness.h.
#include <cstddef>
#include <cstdint>

#include "harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pim::fuzz::Cifar10Input(data, size);
  return 0;
}
