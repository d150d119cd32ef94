// ThreadPool: fork-join parallel loops over index ranges with static partitioning.
// Determinism rule: callers split only independent outputs across chunks and never split a
// reduction, so results are identical for any thread count.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pim {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end) on contiguous chunks covering [0, n), at most one chunk per thread,
  // each at least `grain` long. Runs inline when one chunk suffices. Blocks until done.
  // Not reentrant: fn must not call ParallelFor on the same pool.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);

  int num_threads_;
  std::vector<std::thread> workers_;
  // A job is published by bumping generation_; workers spin on it briefly before sleeping,
  // because a condition-variable wake-up costs tens of microseconds and training issues
  // thousands of short parallel loops per second.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> sleepers_{0};
  std::mutex mu_;
  std::condition_variable start_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int job_chunks_ = 0;
};

// The process-wide pool used by kernels (set once from the config's `threads`).
ThreadPool& DefaultPool();
void SetDefaultThreads(int num_threads);

}  // namespace pim
