// BatchGroup: the processes (MPI ranks) that split every batch between them, and the row
// gathers the data-parallel step is built from (docs/scaling.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

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
  // The largest of the ranks' values (exact: a max does not depend on the order).
  virtual float AllMax(float value) = 0;
  // Reports `message` as this rank's error and ends every rank of the job (exit code 2).
  [[noreturn]] virtual void Abort(const std::string& message) = 0;
};

// The first sample of `rank`'s shard of a batch of n: shards are contiguous, in rank order, and
// differ in size by at most one.
inline int64_t ShardBegin(int64_t n, int rank, int size) { return n * rank / size; }

// `full` = every rank's `local` (same per-sample shape), rows concatenated in rank order, i.e.
// the whole batch as one process holds it. Bitwise copies: no arithmetic.
void GatherRows(const Tensor& local, BatchGroup& group, Tensor& full);
// `out` = rows [begin, end) of `full`.
void SliceRows(const Tensor& full, int64_t begin, int64_t end, Tensor& out);

}  // namespace pim
