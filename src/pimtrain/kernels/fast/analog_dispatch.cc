// The fast analog kernel's one dispatch table (analog_worker.h): the ISA variant of each inner
// loop that this build's target supports, chosen here and nowhere else.
#include "pimtrain/kernels/fast/analog_worker.h"

namespace pim::kernels::fast::internal {

const AnalogKernels& Kernels() {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  static constexpr AnalogKernels kTable = {
      "avx512",
      GroupPairNormalsAvx512,
      TransferRowAvx512,
      &Worker::ConvertAShortcutAvx512,
      &Worker::ReadoutCColumnsAvx512,
#if defined(__AVX512VPOPCNTDQ__)
      {PopcountColumnsAvx512<0>, PopcountColumnsAvx512<1>, PopcountColumnsAvx512<2>},
#else
      {PopcountColumnsScalar<0>, PopcountColumnsScalar<1>, PopcountColumnsScalar<2>},
#endif
#if defined(__AVX512BW__)
      &Worker::ExactProductTilesAvx512,
      &Worker::BuildPlanesAvx512,
      PackPlanes8Avx512,
#else
      &Worker::ExactProductTilesAvx2,
      &Worker::BuildPlanesScalar,
      PackPlanes8Avx2,
#endif
#if defined(__AVX512BW__)
      &Worker::RowSumsAvx512,
#else
      &Worker::RowSumsAvx2,
#endif
      DirectCodesSegmentAvx2,
#if defined(__AVX512BW__)
      DirectWindowSegmentAvx512,
#else
      nullptr,
#endif
#if defined(__AVX512BW__) && defined(__AVX512VBMI__)
      CodeTableSegmentAvx512,
#else
      nullptr,  // the code table's byte lookups need VBMI's VPERMI2B
#endif
  };
#else
  static constexpr AnalogKernels kTable = {
      "avx2",
      GroupPairNormalsAvx2,
      TransferRowAvx2,
      nullptr,  // the small-noise shortcut needs AVX-512's masks and compress
      &Worker::ReadoutCColumnsAvx2,
      // scalar POPCNT: as fast here as a 256-bit nibble-table popcount (two words a column)
      {PopcountColumnsScalar<0>, PopcountColumnsScalar<1>, PopcountColumnsScalar<2>},
      &Worker::ExactProductTilesAvx2,
      &Worker::BuildPlanesScalar,  // scalar: under 1 % of a training step here
      PackPlanes8Avx2,
#if defined(__AVX2__)
      &Worker::RowSumsAvx2,
      DirectCodesSegmentAvx2,
#else
      &Worker::RowSumsScalar,
      DirectCodesSegmentScalar,
#endif
      nullptr,  // the window needs AVX-512 BW
      nullptr,  // the code table's byte lookups need AVX-512 VBMI (TransferRow then)
  };
#endif
  return kTable;
}

}  // namespace pim::kernels::fast::internal
