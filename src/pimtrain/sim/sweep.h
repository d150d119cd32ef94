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

struct SweepOptions {
  int jobs = 1;
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
};

// Runs every point of `spec` not yet finished in spec.out/results.jsonl, at most options.jobs
// at once, and rewrites results.jsonl and results.csv atomically after each point.
SweepOutcome RunSweep(const SweepSpec& spec, const SweepOptions& options);

// The worker side: runs the point in `point_dir` (its point.yaml, written by RunSweep) and
// writes point_dir/result.json. Throws pim::Error on a user error (also recorded in the file).
void RunSweepPoint(const std::string& point_dir, SweepMode mode);

SweepMode ParseSweepMode(const std::string& text, const std::string& where);
const char* SweepModeName(SweepMode mode);

// The metric columns of a results row, after the varied keys.
const std::vector<std::string>& SweepMetricColumns();

}  // namespace pim
