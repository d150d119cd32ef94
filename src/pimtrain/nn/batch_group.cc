// Row gathers and slices for the data-parallel step.
#include "pimtrain/nn/batch_group.h"

#include <cstring>

namespace pim {

void GatherRows(const Tensor& local, BatchGroup& group, Tensor& full) {
  const Shape sample = local.shape().DropFirst();
  const int64_t per = sample.numel();
  const std::string all = group.AllGather(std::string_view(
      reinterpret_cast<const char*>(local.data()),
      static_cast<size_t>(local.numel()) * sizeof(float)));
  const int64_t bytes_per_row = per * static_cast<int64_t>(sizeof(float));
  PIM_CHECK_MSG(per > 0 && static_cast<int64_t>(all.size()) % bytes_per_row == 0,
                "GatherRows: ranks sent rows of different shapes");
  full.Resize(sample.WithBatch(static_cast<int64_t>(all.size()) / bytes_per_row));
  std::memcpy(full.data(), all.data(), all.size());
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
