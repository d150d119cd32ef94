// The digital macros' elementwise fast kernels' one dispatch table (digital_isa.h): the widest
// ISA variant of each body that this build's target supports, chosen here and nowhere else.
#include "pimtrain/kernels/fast/digital_isa.h"

namespace pim::kernels::fast::internal {

const DigitalKernels& Digital() {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  static constexpr DigitalKernels kTable = {
      "avx512",
      RoundBodyAvx512,
      AlignBodyAvx512,
      QuantizeBodyAvx512,
      WordsBodyAvx512,
      QuantizeTransposedBodyAvx512,
      DequantizeWordsBodyAvx512,
      MaxForScaleRowAvx512,
  };
#else
  // The AVX2 bodies run after the table's in any case: nothing wider here.
  static constexpr DigitalKernels kTable = {
      "avx2", nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, MaxForScaleRowAvx2,
  };
#endif
  return kTable;
}

}  // namespace pim::kernels::fast::internal
