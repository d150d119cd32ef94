// BatchGroup: the processes (MPI ranks) that split every batch between them, and the row
// gathers the data-parallel step is built from (docs/scaling.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pimtrain/nn/tensor.h"

namespace pim {

// The ranks of one data-parallel run seen from one of them. Every call is collective: all ranks
// make the same calls in the same order. The CLI implements it over MPI (tools/cli/sweep.cc);
// nn and train do not depend on MPI.
class BatchGroup {
 public:
  virtual ~BatchGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Every rank's `bytes`, concatenated in rank order, on every rank.
  virtual std::string AllGather(std::string_view bytes) = 0;
  // Every rank's bytes gathered in rank order straight into `out` (no temporary copy, and no
  // exchange of sizes: `bytes[r]` is rank r's count, known to every rank). This rank's part is
  // read from `mine`, or, when `mine` is nullptr, is already in place in `out` at its offset.
  // The default goes through AllGather.
  virtual void AllGatherInto(const void* mine, const std::vector<int64_t>& bytes, void* out);
  // The largest of the ranks' values (exact: a max does not depend on the order).
  virtual float AllMax(float value) = 0;
  // values[i] = the largest of the ranks' values[i], for i < count (one collective).
  virtual void AllMaxInPlace(float* values, int count) {
    for (int i = 0; i < count; ++i) values[i] = AllMax(values[i]);
  }
  // Reports `message` as this rank's error and ends every rank of the job (exit code 2).
  [[noreturn]] virtual void Abort(const std::string& message) = 0;
};

// The first sample of `rank`'s shard of a batch of n: shards are contiguous, in rank order, and
// differ in size by at most one.
inline int64_t ShardBegin(int64_t n, int rank, int size) { return n * rank / size; }

// `full` = every rank's `local` (same per-sample shape), rows concatenated in rank order, i.e.
// the whole batch of `batch` rows as one process holds it; rank r holds rows
// [ShardBegin(batch, r), ShardBegin(batch, r + 1)). Bitwise copies: no arithmetic.
void GatherRows(const Tensor& local, int64_t batch, BatchGroup& group, Tensor& full);
// Rows [ShardBegin(rows, r), ShardBegin(rows, r + 1)) of the rows x cols matrix `m` (leading
// dimension cols) are rank r's: gathers them in place, so that every rank holds all of m.
void GatherBlocksInPlace(float* m, int64_t rows, int64_t cols, BatchGroup& group);
// `out` = rows [begin, end) of `full`.
void SliceRows(const Tensor& full, int64_t begin, int64_t end, Tensor& out);

}  // namespace pim
