// Sweep results reader: line-by-line JSON with strict checks and one-line typed errors.
#include "pimtrain/sim/results_reader.h"

#include <algorithm>
#include <unordered_map>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"

namespace pim {
namespace {

// A parser message fit for one line of a terminal: without nlohmann's "[json.exception...] "
// tag, control bytes and non-ASCII shown as '?', and bounded in length (it quotes the input).
std::string Printable(std::string_view message) {
  if (message.rfind("[json.exception.", 0) == 0) {
    size_t close = message.find("] ");
    if (close != std::string_view::npos) message.remove_prefix(close + 2);
  }
  std::string out;
  for (char c : message.substr(0, 200)) {
    const auto u = static_cast<unsigned char>(c);
    out += u < 0x20 || u >= 0x7f ? '?' : c;
  }
  return out;
}

}  // namespace

const SweepResult* SweepResults::Find(std::string_view point) const {
  for (const auto& r : points) {
    if (r.point == point) return &r;
  }
  return nullptr;
}

bool SweepResults::Finished(std::string_view point) const {
  const SweepResult* r = Find(point);
  return r != nullptr && r->status == "ok";
}

SweepResults ParseSweepResults(std::string_view text, const std::string& origin) {
  SweepResults out;
  std::unordered_map<std::string, size_t> index;  // point -> position in out.points
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const bool terminated = end != std::string_view::npos;
    if (!terminated) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;

    const std::string where = origin + ":" + std::to_string(line_no) + ": ";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line.begin(), line.end());
    } catch (const nlohmann::json::exception& e) {
      if (!terminated) {  // the last write was cut short by a crash: that point runs again
        out.dropped_torn_tail = true;
        break;
      }
      throw DataError(where + "not valid JSON (" + Printable(e.what()) + ")");
    }
    if (!j.is_object()) {
      throw DataError(where + "expected a JSON object per line, got " + j.type_name());
    }
    auto point = j.find("point");
    if (point == j.end() || !point->is_string() || point->get_ref<const std::string&>().empty()) {
      throw DataError(where + "'point' must be a non-empty string naming the sweep point");
    }
    const std::string& id = point->get_ref<const std::string&>();
    if (id.size() > kMaxPointLength) {
      throw DataError(where + "'point' is " + std::to_string(id.size()) +
                      " bytes, more than the " + std::to_string(kMaxPointLength) + " allowed");
    }
    auto status = j.find("status");
    if (status == j.end() || !status->is_string()) {
      throw DataError(where + "'status' must be \"ok\" or \"failed\"");
    }
    const std::string& st = status->get_ref<const std::string&>();
    if (st != "ok" && st != "failed") {
      throw DataError(where + "unknown status '" + Printable(st) +
                      "' (expected \"ok\" or \"failed\")");
    }
    SweepResult r;
    r.point = id;  // copies, before `j` moves into the record
    r.status = st;
    r.line = line_no;
    r.record = std::move(j);
    auto [it, inserted] = index.emplace(r.point, out.points.size());
    if (inserted) {
      out.points.push_back(std::move(r));
    } else {
      out.points[it->second] = std::move(r);
    }
  }
  return out;
}

SweepResults ReadSweepResults(const std::string& path) {
  return ParseSweepResults(ReadFile(path), path);
}

}  // namespace pim
