// Sweep result files: one JSON object per line, one line per finished (or failed) sweep point.
// A sweep that is restarted reads its results file to skip the points already done.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace pim {

// One line of a results file:
//   {"point": "<id>", "status": "ok" | "failed", ...any other fields}
// `point` identifies the sweep point (non-empty, at most kMaxPointLength bytes); other fields
// (the point's overrides, its metrics, an error message) are kept as they are.
struct SweepResult {
  std::string point;
  std::string status;
  nlohmann::json record;  // the whole object
  int64_t line = 0;       // 1-based line in the file
};

struct SweepResults {
  // The last record of each point, in order of first appearance: a point retried after a
  // failure appears again further down, and its latest line wins.
  std::vector<SweepResult> points;
  // The file ended in a line without its newline that did not parse: a write cut short by a
  // crash. It is dropped (that point runs again) rather than refused.
  bool dropped_torn_tail = false;

  const SweepResult* Find(std::string_view point) const;
  // True when `point` finished with status "ok".
  bool Finished(std::string_view point) const;
};

inline constexpr size_t kMaxPointLength = 4096;

// Parses the text of a results file. `origin` (the file name) starts every error message.
// DataError "origin:LINE: ..." for a line that is not a JSON object, lacks a string `point` or
// `status`, or has an unknown status; blank lines are skipped.
SweepResults ParseSweepResults(std::string_view text, const std::string& origin);

// Reads and parses `path`; IoError if it cannot be read.
SweepResults ReadSweepResults(const std::string& path);

}  // namespace pim
