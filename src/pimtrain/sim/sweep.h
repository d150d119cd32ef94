// Design-space sweeps: one SWEEP.yaml expands into many config points (a cartesian grid or an
// explicit list of overrides on shared base files); each point is a full training run (or the
// chip figures of `pimtrain cost`) in its own directory, and one results file collects them
// (docs/sweeps.md).
//
// Each point runs in a worker process (the pimtrain binary, `sweep --worker DIR`): a point that
// crashes or runs out of memory is marked failed without taking the sweep down, every point
// starts with fresh process-wide state (thread pool size, caches), and `--jobs N` runs N points
// at once. Only the parent writes the results files.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"

namespace pim {

enum class SweepMode { kTrain, kCost };

// One design point: the overrides ("key=value", value in YAML flow syntax) applied on top of the
// sweep's `set:` list.
struct SweepPoint {
  int index = 0;                       // position in the expansion; names the directory
  std::vector<std::string> overrides;  // "key=value", in the sweep's key order
  std::string id;                      // canonical identity: the overrides sorted by key
  std::string dir;                     // out/point-NNNN (RunSweep keeps a directory that an
                                       // earlier row of another point owns for that point)
  ConfigNode resolved;                 // the validated config of the point
  uint32_t config_crc = 0;             // CRC-32 of the resolved config (threads excluded)
};

struct SweepSpec {
  std::string file;                    // the SWEEP.yaml it came from
  std::vector<std::string> base;       // config files (or chip preset names), merged in order
  std::vector<std::string> set;        // fixed overrides "key=value"
  std::vector<std::string> keys;       // the varied keys, in the order of the file
  std::vector<SweepPoint> points;
  std::string out;
  SweepMode mode = SweepMode::kTrain;
};

// Parses SWEEP.yaml, expands the grid or list, and resolves and validates every point's config
// (schema, and for cost mode the cost model) before anything runs. `out_override` (non-empty)
// replaces `out:`. ConfigError / IoError with one line naming the file, the point and the key.
SweepSpec LoadSweep(const std::string& file, const std::string& out_override = "");

// The ranks of an MPI job seen from one of them (docs/sweeps.md, "MPI"): how the sweep on rank 0
// hands points to the other ranks and collects their rows. The CLI implements it with OpenMPI
// point-to-point messages; the sweep code itself does not depend on MPI.
class SweepRanks {
 public:
  virtual ~SweepRanks() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Rank 0: sends `text` to every other rank and returns it. Other ranks: wait for rank 0's
  // text and return it.
  virtual std::string Broadcast(const std::string& text) = 0;
  // A rank other than 0: queues one message for rank 0 (messages arrive in the order sent).
  virtual void Send(const std::string& text) = 0;
  // Rank 0: the next message another rank sent, if one has arrived; never waits.
  virtual bool Poll(std::string* text) = 0;
  // An error after the points were handed out: report `message` and end every rank (exit 2).
  [[noreturn]] virtual void Abort(const std::string& message) = 0;
};

struct SweepOptions {
  int jobs = 1;
  // Set (with size() > 1) when launched by mpirun: RunSweep on rank 0 runs its share of the
  // points and collects the others' rows; the other ranks call RunSweepPeer.
  SweepRanks* ranks = nullptr;
  // The pimtrain executable that runs one point (`EXE sweep --worker DIR --mode M`).
  std::string executable;
  // One line per event (start, point finished or failed, totals); may be empty.
  std::function<void(const std::string&)> on_message;
};

struct SweepOutcome {
  int total = 0;
  int skipped = 0;  // finished in an earlier invocation (status "ok" in results.jsonl)
  int ran = 0;
  int failed = 0;
  bool abandoned = false;  // RunSweepPeer: rank 0 refused the sweep (and reported why)
};

// Runs every point of `spec` not yet finished in spec.out/results.jsonl, at most options.jobs
// at once, and rewrites results.jsonl and results.csv atomically after each point. The rows of
// the points run in this call end up in expansion order, whatever the number of jobs or ranks.
// Under MPI (options.ranks) this is rank 0: the points to run are dealt round-robin over the
// ranks (rank r takes the r-th, r+size-th, ... of them), and only rank 0 writes the results.
// Totals in the outcome are the whole sweep's.
SweepOutcome RunSweep(const SweepSpec& spec, const SweepOptions& options);

// Ranks other than 0: receives rank 0's plan, runs this rank's points (options.jobs at once) in
// the same sweep directory, and sends each finished row to rank 0. abandoned = true when rank 0
// refused the sweep (a user error it reports itself, exiting 2: this rank then exits 0, or
// mpirun could kill rank 0 before its error is shown).
SweepOutcome RunSweepPeer(const SweepOptions& options);

// Rank 0, when the sweep cannot start (LoadSweep threw): tells the other ranks to stop.
void AbandonSweep(SweepRanks& ranks, const std::string& why);

// The worker side: runs the point in `point_dir` (its point.yaml, written by RunSweep) and
// writes point_dir/result.json. Throws pim::Error on a user error (also recorded in the file).
void RunSweepPoint(const std::string& point_dir, SweepMode mode);

SweepMode ParseSweepMode(const std::string& text, const std::string& where);
const char* SweepModeName(SweepMode mode);

// The metric columns of a results row, after the varied keys.
const std::vector<std::string>& SweepMetricColumns();

}  // namespace pim
