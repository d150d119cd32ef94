// Row gathers and slices for the data-parallel step.
#include "pimtrain/nn/batch_group.h"

#include <cstring>

namespace pim {

void BatchGroup::AllGatherInto(const void* mine, const std::vector<int64_t>& bytes, void* out) {
  PIM_CHECK_MSG(static_cast<int>(bytes.size()) == size(), "AllGatherInto: one count per rank");
  int64_t offset = 0;
  for (int r = 0; r < rank(); ++r) offset += bytes[r];
  const char* src = mine != nullptr ? static_cast<const char*>(mine)
                                    : static_cast<const char*>(out) + offset;
  const std::string all =
      AllGather(std::string_view(src, static_cast<size_t>(bytes[rank()])));
  int64_t total = 0;
  for (int64_t b : bytes) total += b;
  PIM_CHECK_MSG(static_cast<int64_t>(all.size()) == total, "AllGatherInto: ranks sent other sizes");
  std::memcpy(out, all.data(), all.size());
}

void GatherRows(const Tensor& local, int64_t batch, BatchGroup& group, Tensor& full) {
  const Shape sample = local.shape().DropFirst();
  const int64_t per = sample.numel();
  const int r = group.rank(), n = group.size();
  PIM_CHECK_MSG(per > 0 && local.shape()[0] == ShardBegin(batch, r + 1, n) - ShardBegin(batch, r, n),
                "GatherRows: the local rows are not this rank's shard");
  std::vector<int64_t> bytes(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) {
    bytes[k] = (ShardBegin(batch, k + 1, n) - ShardBegin(batch, k, n)) * per *
               static_cast<int64_t>(sizeof(float));
  }
  full.Resize(sample.WithBatch(batch));
  group.AllGatherInto(local.data(), bytes, full.data());
}

void GatherBlocksInPlace(float* m, int64_t rows, int64_t cols, BatchGroup& group) {
  const int n = group.size();
  std::vector<int64_t> bytes(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) {
    bytes[k] = (ShardBegin(rows, k + 1, n) - ShardBegin(rows, k, n)) * cols *
               static_cast<int64_t>(sizeof(float));
  }
  group.AllGatherInto(nullptr, bytes, m);
}

void SliceRows(const Tensor& full, int64_t begin, int64_t end, Tensor& out) {
  const Shape sample = full.shape().DropFirst();
  const int64_t per = sample.numel();
  PIM_CHECK(begin >= 0 && begin <= end && end <= full.shape()[0]);
  out.Resize(sample.WithBatch(end - begin));
  if (end > begin) {
    std::memcpy(out.data(), full.data() + begin * per,
                static_cast<size_t>((end - begin) * per) * sizeof(float));
  }
}

}  // namespace pim
