// `pimtrain sweep SWEEP.yaml [--jobs N] [--out DIR]`, and `pimtrain sweep --worker DIR`, the
// process that runs one point for it. Under `mpirun -np N` the points are spread over the N
// ranks (docs/sweeps.md, "MPI").
#include "sweep.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string_view>
#include <thread>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/nn/batch_group.h"
#include "pimtrain/sim/sweep.h"

#ifdef PIMTRAIN_WITH_MPI
#include <mpi.h>
#endif

namespace pim {
namespace {

// This binary, to start the workers with: argv[0] may be relative to a directory the sweep
// has since left, or a name found on PATH.
std::string SelfExecutable() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) throw IoError("/proc/self/exe: cannot find the pimtrain binary to run points");
  return std::string(buf, static_cast<size_t>(n));
}

// The number of ranks mpirun started, from Open MPI's environment (1 when not under mpirun).
int MpiWorldSize() {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (size == nullptr) return 1;
  char* end = nullptr;
  long n = std::strtol(size, &end, 10);
  return end != size && *end == '\0' && n >= 1 && n <= 1 << 20 ? static_cast<int>(n) : 1;
}

#ifdef PIMTRAIN_WITH_MPI
// SweepRanks over Open MPI point-to-point messages. Waiting is done by probing and sleeping,
// never in a blocking MPI call: Open MPI busy-polls in those, and a rank waiting for the others
// would take a core from the points they are running.
// The same object is the BatchGroup of a data-parallel `pimtrain train` (docs/scaling.md): there
// the ranks run in lock step and a step's collectives follow one another within milliseconds:
// they are nonblocking collectives waited on by testing, then short naps (WaitBriefly).
class MpiRanks : public SweepRanks, public BatchGroup {
 public:
  MpiRanks() {
    MPI_Init(nullptr, nullptr);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiRanks() override {
    // Every queued message delivered before the rank leaves.
    for (auto& r : pending_) WaitFor(&r);
    MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  std::string Broadcast(const std::string& text) override {
    if (rank_ == 0) {
      std::vector<MPI_Request> requests(static_cast<size_t>(size_ - 1));
      for (int r = 1; r < size_; ++r) {
        MPI_Isend(text.data(), static_cast<int>(text.size()), MPI_CHAR, r, kPlanTag,
                  MPI_COMM_WORLD, &requests[static_cast<size_t>(r - 1)]);
      }
      for (auto& r : requests) WaitFor(&r);
      return text;
    }
    MPI_Status status;
    for (;;) {
      int flag = 0;
      MPI_Iprobe(0, kPlanTag, MPI_COMM_WORLD, &flag, &status);
      if (flag != 0) break;
      Nap();
    }
    return Receive(status, kPlanTag);
  }

  void Send(const std::string& text) override {
    sent_.push_back(text);
    pending_.emplace_back();
    MPI_Isend(sent_.back().data(), static_cast<int>(sent_.back().size()), MPI_CHAR, 0, kRowTag,
              MPI_COMM_WORLD, &pending_.back());
  }

  bool Poll(std::string* text) override {
    int flag = 0;
    MPI_Status status;
    MPI_Iprobe(MPI_ANY_SOURCE, kRowTag, MPI_COMM_WORLD, &flag, &status);
    if (flag == 0) return false;
    *text = Receive(status, kRowTag);
    return true;
  }

  std::string AllGather(std::string_view bytes) override {
    const int mine = static_cast<int>(bytes.size());
    std::vector<int> sizes(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
    MPI_Allgather(&mine, 1, MPI_INT, sizes.data(), 1, MPI_INT, MPI_COMM_WORLD);
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      offsets[static_cast<size_t>(r)] = static_cast<int>(total);
      total += sizes[static_cast<size_t>(r)];
    }
    PIM_CHECK_MSG(total < (int64_t{1} << 31), "AllGather: more than 2 GiB in one gather");
    std::string all(static_cast<size_t>(total), '\0');
    MPI_Allgatherv(bytes.data(), mine, MPI_CHAR, all.data(), sizes.data(), offsets.data(),
                   MPI_CHAR, MPI_COMM_WORLD);
    return all;
  }

  void AllGatherInto(const void* mine, const std::vector<int64_t>& bytes, void* out) override {
    PIM_CHECK_MSG(static_cast<int>(bytes.size()) == size_, "AllGatherInto: one count per rank");
    std::vector<int> sizes(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      offsets[static_cast<size_t>(r)] = static_cast<int>(total);
      sizes[static_cast<size_t>(r)] = static_cast<int>(bytes[static_cast<size_t>(r)]);
      total += bytes[static_cast<size_t>(r)];
    }
    PIM_CHECK_MSG(total < (int64_t{1} << 31), "AllGatherInto: more than 2 GiB in one gather");
    // In place: this rank's part already sits at its offset in `out`.
    MPI_Request request;
    MPI_Iallgatherv(mine != nullptr ? mine : MPI_IN_PLACE, sizes[static_cast<size_t>(rank_)],
                    MPI_CHAR, out, sizes.data(), offsets.data(), MPI_CHAR, MPI_COMM_WORLD,
                    &request);
    WaitBriefly(&request);
  }

  void AllMaxInPlace(float* values, int count) override {
    MPI_Request request;
    MPI_Iallreduce(MPI_IN_PLACE, values, count, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD, &request);
    WaitBriefly(&request);
  }

  float AllMax(float value) override {
    AllMaxInPlace(&value, 1);
    return value;
  }

  [[noreturn]] void Abort(const std::string& message) override {
    std::fflush(stdout);
    std::fprintf(stderr, "pimtrain: error: rank %d of %d: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 2);
    std::_Exit(2);
  }

 private:
  static constexpr int kPlanTag = 1, kRowTag = 2;
  static void Nap() { std::this_thread::sleep_for(std::chrono::milliseconds(5)); }
  // The data-parallel step's collectives: a rank that arrives first tests the request a few
  // times, then sleeps between tests, from 20 us doubling to 0.5 ms. Blocking MPI calls spin
  // (or, yielding, still take their core whenever nothing else is runnable): the waiting rank
  // burnt CPU the others could use (on this 2-vCPU VM, ~20 % of a T-PIM CNN rank's CPU was
  // sched_yield). Progress is made inside MPI_Test.
  static void WaitBriefly(MPI_Request* r) {
    int done = 0;
    for (int i = 0; i < 64 && done == 0; ++i) MPI_Test(r, &done, MPI_STATUS_IGNORE);
    for (auto nap = std::chrono::microseconds(20); done == 0;
         nap = std::min(2 * nap, std::chrono::microseconds(500))) {
      std::this_thread::sleep_for(nap);
      MPI_Test(r, &done, MPI_STATUS_IGNORE);
    }
  }
  static void WaitFor(MPI_Request* r) {
    for (;;) {
      int done = 0;
      MPI_Test(r, &done, MPI_STATUS_IGNORE);
      if (done != 0) return;
      Nap();
    }
  }
  static std::string Receive(MPI_Status status, int tag) {
    int count = 0;
    MPI_Get_count(&status, MPI_CHAR, &count);
    std::string text(static_cast<size_t>(count), '\0');
    MPI_Recv(text.data(), count, MPI_CHAR, status.MPI_SOURCE, tag, MPI_COMM_WORLD,
             MPI_STATUS_IGNORE);
    return text;
  }

  int rank_ = 0, size_ = 1;
  std::deque<std::string> sent_;  // buffers of the messages in flight (deque: stable addresses)
  std::deque<MPI_Request> pending_;
};
#endif

}  // namespace

std::unique_ptr<BatchGroup> StartBatchGroup() {
  const int world = MpiWorldSize();
  if (world <= 1) return nullptr;
#ifdef PIMTRAIN_WITH_MPI
  // A rank waiting in a collective yields its core instead of spinning on it (unless the user
  // set it): on a machine with more ranks than free cores, a spinning rank starves the one it
  // waits for (one T-PIM epoch on this 2-vCPU VM under load: 7.0 s spinning, 2.0 s yielding).
  ::setenv("OMPI_MCA_mpi_yield_when_idle", "1", /*overwrite=*/0);
  return std::make_unique<MpiRanks>();
#else
  throw UnsupportedError("launched by mpirun with " + std::to_string(world) +
                         " ranks, but this pimtrain was built without MPI (install "
                         "libopenmpi-dev and rebuild; docs/scaling.md)");
#endif
}

std::unique_ptr<SweepCommand> AddSweepCommand(CLI::App& app) {
  auto cmd = std::make_unique<SweepCommand>();
  cmd->app = app.add_subcommand(
      "sweep", "run every point of a design-space sweep (docs/sweeps.md); resumable; under "
               "mpirun the points are spread over the ranks");
  cmd->app->add_option("sweep", cmd->file, "SWEEP.yaml: base, set, grid or points, out, mode");
  cmd->app->add_option("--jobs,-j", cmd->jobs,
                       "points run at once (per MPI rank), each in its own process")
      ->check(CLI::Range(1, 1024));
  cmd->app->add_option("--out", cmd->out, "results directory (overrides out: in the file)");
  // The worker mode is internal: the sweep starts one such process per point.
  cmd->app->add_option("--worker", cmd->worker, "run the point in DIR (internal)")->group("");
  cmd->app->add_option("--mode", cmd->mode, "worker mode: train or cost (internal)")->group("");
  return cmd;
}

int RunSweepCommand(const SweepCommand& cmd) {
  if (!cmd.worker.empty()) {
    RunSweepPoint(cmd.worker, ParseSweepMode(cmd.mode, "--mode"));
    return 0;
  }
  SweepOptions options;
  options.jobs = cmd.jobs;
  options.executable = SelfExecutable();
  const int world = MpiWorldSize();
#ifdef PIMTRAIN_WITH_MPI
  std::unique_ptr<MpiRanks> mpi;
  if (world > 1) {
    mpi = std::make_unique<MpiRanks>();
    options.ranks = mpi.get();
  }
#else
  if (world > 1) {
    throw UnsupportedError("launched by mpirun with " + std::to_string(world) +
                           " ranks, but this pimtrain was built without MPI (install "
                           "libopenmpi-dev and rebuild; docs/sweeps.md)");
  }
#endif
  const bool root = options.ranks == nullptr || options.ranks->rank() == 0;
  options.on_message = [](const std::string& m) {
    std::printf("%s\n", m.c_str());
    std::fflush(stdout);
  };
  if (!root) {
    // Rank 0 reads the sweep file and reports its errors; this rank runs what it is sent.
    SweepOutcome o = RunSweepPeer(options);
    // Rank 0 refused the sweep and reports why, exiting with 2 itself. This rank must exit 0:
    // mpirun kills the whole job as soon as any rank exits non-zero, and output a killed rank
    // had already written may never be forwarded, so a 2 here lost rank 0's error whenever this
    // rank got out first. mpirun's own exit code is still rank 0's 2.
    if (o.abandoned) return 0;
    return o.failed > 0 ? 1 : 0;
  }
  SweepSpec spec;
  try {
    if (cmd.file.empty()) throw ConfigError("sweep needs a SWEEP.yaml (docs/sweeps.md)");
    spec = LoadSweep(cmd.file, cmd.out);
  } catch (const Error& e) {
    if (options.ranks != nullptr) AbandonSweep(*options.ranks, e.what());
    throw;
  }
  SweepOutcome o = RunSweep(spec, options);
  return o.failed > 0 ? 1 : 0;
}

}  // namespace pim
