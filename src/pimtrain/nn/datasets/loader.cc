// Epoch shuffling and mini-batch gathering shared by every data set.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>

#include "pimtrain/base/error.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/nn/dataset.h"

namespace pim {
namespace {

// Stream tag of the shuffle, so it never shares random numbers with weights, dropout or noise.
constexpr uint64_t kShuffleTag = 0xDA7A;

}  // namespace

std::vector<int64_t> EpochOrder(uint64_t seed, int64_t epoch, int64_t n) {
  PIM_CHECK(n >= 0);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  const CounterRng rng(MixKey(seed, static_cast<uint64_t>(epoch), kShuffleTag));
  // Fisher-Yates from the back; draw i picks uniformly among the i + 1 still unplaced.
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j =
        static_cast<int64_t>(rng.Below(static_cast<uint64_t>(i), static_cast<uint64_t>(i) + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

void GatherBatch(const Split& split, const std::vector<int64_t>& indices, int64_t begin,
                 int64_t end, Tensor& x, std::vector<int32_t>& y) {
  PIM_CHECK(0 <= begin && begin <= end && end <= static_cast<int64_t>(indices.size()));
  const int64_t n = split.size();
  PIM_CHECK_MSG(
      split.images.shape().rank() >= 1 && split.images.shape()[0] == n,
      "images " + split.images.shape().ToString() + " vs " + std::to_string(n) + " labels");
  const Shape sample = split.images.shape().DropFirst();
  const int64_t d = sample.numel();
  x.Resize(sample.WithBatch(end - begin));
  y.resize(static_cast<size_t>(end - begin));
  const float* src = split.images.data();
  float* dst = x.data();
  for (int64_t b = begin; b < end; ++b) {
    const int64_t i = indices[b];
    PIM_CHECK_MSG(0 <= i && i < n,
                  "sample index " + std::to_string(i) + " of " + std::to_string(n));
    y[b - begin] = split.labels[i];
  }
  // The rows in parallel: random rows of a large split mostly miss the cache, and the copy
  // would otherwise run on one thread between the parallel stages of a step.
  if (d > 0) {
    DefaultPool().ParallelFor(end - begin, std::max<int64_t>(1, 16384 / d),
                              [&](int64_t r0, int64_t r1) {
                                for (int64_t r = r0; r < r1; ++r) {
                                  std::memcpy(dst + r * d, src + indices[begin + r] * d,
                                              sizeof(float) * d);
                                }
                              });
  }
}

}  // namespace pim
