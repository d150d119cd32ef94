// ThreadPool implementation: spin-then-sleep workers; chunk i of k always covers the same range.
#include "pimtrain/base/parallel.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "pimtrain/base/error.h"

namespace pim {

namespace {

void ChunkRange(int64_t n, int chunks, int i, int64_t* b, int64_t* e) {
  *b = n * i / chunks;
  *e = n * (i + 1) / chunks;
}

// How long an idle worker spins before it sleeps: long enough to bridge the gap between the
// parallel loops of one training step, short enough not to burn a core between steps.
constexpr auto kSpin = std::chrono::microseconds(200);

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  start_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  while (true) {
    // Spin for a while, then sleep until a new generation or stop.
    auto deadline = std::chrono::steady_clock::now() + kSpin;
    int polls = 0;
    while (generation_.load(std::memory_order_acquire) == seen && !stop_.load()) {
      _mm_pause();
      if (++polls % 64 == 0 && std::chrono::steady_clock::now() > deadline) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1);
        start_cv_.wait(lock, [&] {
          return stop_.load() || generation_.load(std::memory_order_acquire) != seen;
        });
        sleepers_.fetch_sub(1);
        break;
      }
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    const auto* job = job_;
    const int64_t n = job_n_;
    const int chunks = job_chunks_;
    if (index < chunks) {
      int64_t b, e;
      ChunkRange(n, chunks, index, &b, &e);
      if (b < e) (*job)(b, e);
    }
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int chunks = static_cast<int>(std::min<int64_t>(num_threads_, (n + grain - 1) / grain));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  job_chunks_ = chunks;
  pending_.store(num_threads_ - 1, std::memory_order_relaxed);
  {
    // The lock orders the publication against a worker that is about to sleep.
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  if (sleepers_.load() > 0) start_cv_.notify_all();
  int64_t b, e;
  ChunkRange(n, chunks, 0, &b, &e);
  fn(b, e);
  // Yield now and then: on a busy machine the worker we wait for may need this core.
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 4096) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
  job_ = nullptr;
}

namespace {
std::unique_ptr<ThreadPool>& PoolSlot() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}
}  // namespace

ThreadPool& DefaultPool() {
  auto& p = PoolSlot();
  if (!p) p = std::make_unique<ThreadPool>(1);
  return *p;
}

void SetDefaultThreads(int num_threads) {
  auto& p = PoolSlot();
  if (p && p->num_threads() == num_threads) return;
  p = std::make_unique<ThreadPool>(num_threads);
}

}  // namespace pim
