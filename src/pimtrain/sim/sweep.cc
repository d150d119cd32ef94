// Sweeps: expansion and validation of SWEEP.yaml, the worker-process scheduler, and the results
// files (docs/sweeps.md).
#include "pimtrain/sim/sweep.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string_view>
#include <nlohmann/json.hpp>
#include <thread>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/cost/cost_model.h"
#include "pimtrain/cost/tech.h"
#include "pimtrain/sim/figures.h"
#include "pimtrain/sim/results_reader.h"
#include "pimtrain/sim/session.h"
#include "pimtrain/train/checkpoint.h"

namespace pim {
namespace {

using Json = nlohmann::ordered_json;

// A sweep of more points than this is almost certainly a mistake in the grid (and would take
// days); the limit makes it a one-line error instead of an expansion that eats memory.
constexpr size_t kMaxPoints = 100000;

const char* kResultsJsonl = "results.jsonl";
const char* kResultsCsv = "results.csv";
const char* kPointConfig = "point.yaml";
const char* kPointResult = "result.json";
const char* kPointLog = "log.txt";

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A value in YAML flow syntax, so that "key=" + it is a valid ApplySet assignment that parses
// back to the same tree ([784, 64, 10], {impl: sgd, learning_rate: 0.1}, "quoted text").
void EmitFlow(const ConfigNode& n, YAML::Emitter& out) {
  switch (n.kind()) {
    case ConfigNode::Kind::kNull: out << YAML::Null; break;
    case ConfigNode::Kind::kScalar:
      if (n.scalar_type() == ScalarType::kString) {
        out << YAML::DoubleQuoted << n.text();
      } else {
        out << n.text();
      }
      break;
    case ConfigNode::Kind::kList:
      out << YAML::Flow << YAML::BeginSeq;
      for (const auto& i : n.items()) EmitFlow(i, out);
      out << YAML::EndSeq;
      break;
    case ConfigNode::Kind::kMap:
      out << YAML::Flow << YAML::BeginMap;
      for (const auto& [k, v] : n.entries()) {
        out << YAML::Key << k << YAML::Value;
        EmitFlow(v, out);
      }
      out << YAML::EndMap;
      break;
  }
}

std::string FlowYaml(const ConfigNode& n) {
  YAML::Emitter out;
  out.SetMapFormat(YAML::Flow);
  out.SetSeqFormat(YAML::Flow);
  EmitFlow(n, out);
  return out.c_str();
}

// The node of `root` whose path is `key` ("pim.macro.adc_bits", "model.layers[1]"), or nullptr.
const ConfigNode* FindPath(const ConfigNode& root, const std::string& key) {
  if (root.path() == key) return &root;
  for (const auto& [k, v] : root.entries()) {
    if (key.rfind(v.path(), 0) == 0) {
      if (const ConfigNode* f = FindPath(v, key)) return f;
    }
  }
  for (const auto& v : root.items()) {
    if (key.rfind(v.path(), 0) == 0) {
      if (const ConfigNode* f = FindPath(v, key)) return f;
    }
  }
  return nullptr;
}

std::string PointDirName(int index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "point-%04d", index);
  return buf;
}

// A config file path, or a chip preset's name (presets/chips/NAME.yaml) as `pimtrain cost` takes.
std::string ResolveBaseFile(const ConfigNode& node) {
  return ResolvePresetOrFile(node.AsString(), node.Where());
}

// "key=value" from a map entry of `set:`, `grid:` or `points:`; the key is a dotted path.
std::string Assignment(const std::string& key, const ConfigNode& value) {
  return key + "=" + FlowYaml(value);
}

std::string KeyOf(const std::string& assignment) {
  return assignment.substr(0, assignment.find('='));
}

uint32_t ConfigCrc(const ConfigNode& resolved) {
  ConfigNode c = resolved;
  c.Erase("threads");  // results do not depend on it
  std::string text = ToYaml(c);
  return Crc32(text.data(), text.size());
}

// Reads the last non-empty line of a worker's log (its error message, usually).
std::string LastLogLine(const std::string& path) {
  if (!FileExists(path)) return "";
  std::string text;
  try {
    text = ReadFile(path);
  } catch (const Error&) {
    return "";
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  size_t nl = text.rfind('\n');
  std::string line = nl == std::string::npos ? text : text.substr(nl + 1);
  size_t cr = line.rfind('\r');  // a progress bar's last frame
  if (cr != std::string::npos) line = line.substr(cr + 1);
  if (line.size() > 300) line = line.substr(0, 300) + "...";
  return line;
}

std::string CsvCell(const nlohmann::json& v) {
  if (v.is_null()) return "";
  std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

// The varied keys' values of a point, typed as the schema typed them.
Json PointValues(const SweepSpec& spec, const SweepPoint& p) {
  Json j = Json::object();
  for (const auto& key : spec.keys) {
    const ConfigNode* n = FindPath(p.resolved, key);
    if (n == nullptr) {
      j[key] = nullptr;
      continue;
    }
    j[key] = Json::parse(ToJson(*n));
  }
  return j;
}

class ResultsFiles {
 public:
  ResultsFiles(const SweepSpec& spec) : spec_(spec) {
    path_ = spec.out + "/" + kResultsJsonl;
    if (FileExists(path_)) {
      const std::string text = ReadFile(path_);
      SweepResults r = ParseSweepResults(text, path_);
      // The reader checked every line; parse each kept one again keeping its key order, so
      // rewriting the file leaves earlier rows as they were.
      std::vector<std::string_view> lines;
      for (size_t pos = 0; pos <= text.size();) {
        size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        lines.push_back(std::string_view(text).substr(pos, end - pos));
        pos = end + 1;
      }
      for (auto& p : r.points) {
        order_.push_back(p.point);
        initial_.insert(p.point);
        records_[p.point] = Json::parse(lines.at(static_cast<size_t>(p.line - 1)));
      }
    }
  }

  const Json* Find(const std::string& id) const {
    auto it = records_.find(id);
    return it == records_.end() ? nullptr : &it->second;
  }
  bool Finished(const std::string& id) const {
    const Json* r = Find(id);
    return r != nullptr && r->value("status", "") == "ok";
  }

  // Records a point's row and rewrites both files atomically: a crash leaves the previous
  // complete files, never a torn line.
  void Put(const std::string& id, Json row) {
    if (records_.find(id) == records_.end()) order_.push_back(id);
    records_[id] = std::move(row);
    std::string jsonl;
    for (const auto& i : order_) jsonl += records_.at(i).dump() + "\n";
    WriteFileAtomic(path_, jsonl);
    WriteCsv();
  }

  void WriteCsv() const {
    // The CSV holds this sweep's points (in expansion order): their varied keys as columns.
    std::vector<std::string> cols = spec_.keys;
    cols.push_back("status");
    for (const auto& c : SweepMetricColumns()) cols.push_back(c);
    cols.push_back("dir");
    cols.push_back("error");
    std::string csv;
    for (size_t i = 0; i < cols.size(); ++i) {
      if (i > 0) csv += ',';
      csv += CsvCell(cols[i]);
    }
    csv += "\n";
    for (const auto& p : spec_.points) {
      const Json* r = Find(p.id);
      if (r == nullptr) continue;
      for (size_t i = 0; i < cols.size(); ++i) {
        auto it = r->find(cols[i]);
        if (i > 0) csv += ',';
        if (it != r->end()) csv += CsvCell(*it);
      }
      csv += "\n";
    }
    WriteFileAtomic(spec_.out + "/" + kResultsCsv, csv);
  }

  // Puts the rows that were not in the file when it was read in the order of `ids` (the plan's
  // expansion order), after the earlier rows, and rewrites the file if that changed anything.
  // Rows then come in the same order however many jobs or ranks ran them, in whatever order
  // they finished; a retried point keeps the place of its earlier row, as Put left it.
  void Reorder(const std::vector<std::string>& ids) {
    std::vector<std::string> order;
    for (const auto& i : order_) {
      if (initial_.count(i) > 0) order.push_back(i);
    }
    for (const auto& i : ids) {
      if (initial_.count(i) == 0 && records_.count(i) > 0) order.push_back(i);
    }
    if (order.size() != order_.size() || order == order_) return;
    order_ = std::move(order);
    std::string jsonl;
    for (const auto& i : order_) jsonl += records_.at(i).dump() + "\n";
    WriteFileAtomic(path_, jsonl);
  }

  const std::string& path() const { return path_; }
  const std::vector<std::string>& Ids() const { return order_; }

 private:
  const SweepSpec& spec_;
  std::string path_;
  std::vector<std::string> order_;
  std::set<std::string> initial_;  // the points with a row when the file was read
  std::map<std::string, Json> records_;
};

// A point to run, as rank 0 plans it; the plan goes to the other ranks as JSON, so a rank needs
// neither the sweep file nor the base configs to run its share.
struct Planned {
  std::string id;           // the point's identity
  std::string name;         // its directory under out/
  std::string config_yaml;  // the resolved config (point.yaml)
  Json values;              // the varied keys' values
  uint32_t crc = 0;
};

Json PlanJson(const std::string& out, SweepMode mode, const std::vector<Planned>& plan) {
  Json j;
  j["out"] = out;
  j["mode"] = SweepModeName(mode);
  Json points = Json::array();
  for (const auto& p : plan) {
    points.push_back(Json{{"id", p.id},
                          {"dir", p.name},
                          {"config", p.config_yaml},
                          {"values", p.values},
                          {"config_crc", p.crc}});
  }
  j["points"] = std::move(points);
  return j;
}

struct Running {
  pid_t pid = -1;
  const Planned* point = nullptr;
  std::string name;  // its directory under out/
  std::string dir;   // out/name
  double start = 0;
};

// "point-0012": the only directory names a results row may refer to (a row naming another path
// is not trusted to say where a point's files are).
bool IsPointDirName(const std::string& name) {
  if (name.size() < 7 || name.rfind("point-", 0) != 0) return false;
  return name.find_first_not_of("0123456789", 6) == std::string::npos;
}

// Starts `exe sweep --worker DIR --mode M` with stdout and stderr appended to DIR/log.txt.
// fork + exec rather than posix_spawn so that the child can ask to be killed when the sweep
// dies (PR_SET_PDEATHSIG): an orphaned worker would otherwise keep writing a point directory
// that a restarted sweep runs again.
pid_t SpawnWorker(const std::string& exe, const std::string& dir, SweepMode mode) {
  std::vector<std::string> args = {exe, "sweep", "--worker", dir, "--mode", SweepModeName(mode)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = dir + "/" + kPointLog;
  const pid_t parent = ::getpid();
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = ::fork();
  if (pid < 0) throw IoError(dir + ": cannot start a worker process: " + std::strerror(errno));
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execv(argv[0], argv.data());
    static const char kMsg[] = "pimtrain sweep: cannot execute the worker binary\n";
    ssize_t ignored = ::write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    (void)ignored;
    ::_exit(127);
  }
  return pid;
}

Json MetricsOrNull(const Json& result) {
  Json j = Json::object();
  for (const auto& c : SweepMetricColumns()) {
    auto it = result.find(c);
    j[c] = it == result.end() ? Json(nullptr) : *it;
  }
  return j;
}

std::string FormatMetric(const Json& row, const char* key, const char* fmt, double scale) {
  auto it = row.find(key);
  if (it == row.end() || !it->is_number()) return "";
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, it->get<double>() * scale);
  return buf;
}

}  // namespace

SweepMode ParseSweepMode(const std::string& text, const std::string& where) {
  if (text == "train") return SweepMode::kTrain;
  if (text == "cost") return SweepMode::kCost;
  throw ConfigError(where + ": mode must be 'train' or 'cost', got '" + text + "'");
}

const char* SweepModeName(SweepMode mode) {
  return mode == SweepMode::kTrain ? "train" : "cost";
}

const std::vector<std::string>& SweepMetricColumns() {
  static const std::vector<std::string> cols = {"test_accuracy", "energy_j", "latency_s",
                                                "tops_per_watt", "seconds"};
  return cols;
}

SweepSpec LoadSweep(const std::string& file, const std::string& out_override) {
  SweepSpec spec;
  spec.file = file;
  ConfigNode root = LoadYamlFile(file);
  static const std::vector<std::string> kKeys = {"base", "set", "grid", "points", "out", "mode"};
  for (const auto& [k, v] : root.entries()) {
    if (std::find(kKeys.begin(), kKeys.end(), k) == kKeys.end()) {
      throw ConfigError(v.Where() + ": unknown sweep key '" + k + "'" + DidYouMean(k, kKeys) +
                        " (keys: base, set, grid, points, out, mode)");
    }
  }

  // base: one file or a list; set: a list of "key=value" or a map of key: value.
  std::vector<std::string> base_files;
  if (const ConfigNode* b = root.Find("base"); b != nullptr && !b->IsNull()) {
    if (b->IsScalar()) {
      base_files.push_back(ResolveBaseFile(*b));
    } else if (b->IsList()) {
      for (const auto& item : b->items()) {
        if (!item.IsScalar()) throw ConfigError(item.Where() + ": expected a config file name");
        base_files.push_back(ResolveBaseFile(item));
      }
    } else {
      throw ConfigError(b->Where() + ": base must be a config file or a list of them");
    }
  }
  spec.base = base_files;
  if (const ConfigNode* s = root.Find("set"); s != nullptr && !s->IsNull()) {
    if (s->IsMap()) {
      for (const auto& [k, v] : s->entries()) spec.set.push_back(Assignment(k, v));
    } else if (s->IsList()) {
      for (const auto& item : s->items()) {
        if (!item.IsScalar() || item.text().find('=') == std::string::npos) {
          throw ConfigError(item.Where() + ": expected KEY=VALUE, e.g. train.epochs=3");
        }
        spec.set.push_back(item.text());
      }
    } else {
      throw ConfigError(s->Where() + ": set must be a map of key: value or a list of KEY=VALUE");
    }
  }
  if (const ConfigNode* m = root.Find("mode"); m != nullptr && !m->IsNull()) {
    spec.mode = ParseSweepMode(m->AsString(), m->Where());
  }
  spec.out = out_override;
  if (spec.out.empty()) {
    const ConfigNode* o = root.Find("out");
    if (o == nullptr || o->IsNull()) {
      throw ConfigError(file + ": no out: directory (or pass --out DIR)");
    }
    spec.out = o->AsString();
  }

  // The points: every combination of the grid (the last key varies fastest), or the list.
  const ConfigNode* grid = root.Find("grid");
  const ConfigNode* list = root.Find("points");
  if ((grid == nullptr) == (list == nullptr)) {
    throw ConfigError(file + ": a sweep needs exactly one of grid: (every combination) or "
                      "points: (a list)");
  }
  std::vector<std::vector<std::string>> overrides;
  if (grid != nullptr) {
    if (!grid->IsMap() || grid->entries().empty()) {
      throw ConfigError(grid->Where() + ": grid must map each key to a list of values");
    }
    overrides.push_back({});
    for (const auto& [k, values] : grid->entries()) {
      if (!values.IsList() || values.items().empty()) {
        throw ConfigError(values.Where() + ": grid." + k + " must be a non-empty list of values");
      }
      spec.keys.push_back(k);
      if (overrides.size() * values.items().size() > kMaxPoints) {
        throw ConfigError(grid->Where() + ": the grid has more than " +
                          std::to_string(kMaxPoints) + " points");
      }
      std::vector<std::vector<std::string>> next;
      for (const auto& prefix : overrides) {
        for (const auto& v : values.items()) {
          next.push_back(prefix);
          next.back().push_back(Assignment(k, v));
        }
      }
      overrides = std::move(next);
    }
  } else {
    if (!list->IsList() || list->items().empty()) {
      throw ConfigError(list->Where() + ": points must be a non-empty list of key: value maps");
    }
    if (list->items().size() > kMaxPoints) {
      throw ConfigError(list->Where() + ": more than " + std::to_string(kMaxPoints) + " points");
    }
    for (const auto& item : list->items()) {
      if (!item.IsMap()) {
        throw ConfigError(item.Where() + ": each point must be a map of key: value");
      }
      overrides.push_back({});
      for (const auto& [k, v] : item.entries()) {
        if (std::find(spec.keys.begin(), spec.keys.end(), k) == spec.keys.end()) {
          spec.keys.push_back(k);
        }
        overrides.back().push_back(Assignment(k, v));
      }
    }
  }

  // Resolve and validate every point before any runs: a typo in the last value of a grid must
  // not surface hours into the sweep.
  ConfigNode merged = ConfigNode::Map();
  for (const auto& f : base_files) MergeInto(merged, LoadYamlFile(f));
  std::map<std::string, int> seen;
  for (size_t i = 0; i < overrides.size(); ++i) {
    SweepPoint p;
    p.index = static_cast<int>(i);
    p.overrides = overrides[i];
    std::vector<std::string> sorted = p.overrides;
    std::sort(sorted.begin(), sorted.end(),
              [](const std::string& a, const std::string& b) { return KeyOf(a) < KeyOf(b); });
    for (const auto& s : sorted) p.id += (p.id.empty() ? "" : " ") + s;
    if (p.id.empty()) p.id = "(base)";
    p.dir = spec.out + "/" + PointDirName(p.index);
    const std::string where = file + ": point " + std::to_string(i) + " (" + p.id + "): ";
    if (auto [it, inserted] = seen.emplace(p.id, p.index); !inserted) {
      throw ConfigError(where + "the same design point as point " + std::to_string(it->second));
    }
    try {
      ConfigNode c = merged;
      for (const auto& s : spec.set) ApplySet(c, s, &RootSchema());
      for (const auto& s : p.overrides) ApplySet(c, s, &RootSchema());
      p.resolved = ValidateRoot(c);
      if (spec.mode == SweepMode::kCost) {
        const ConfigNode* block = p.resolved.Find("cost");
        if (block == nullptr || block->IsNull()) {
          throw ConfigError("mode: cost needs a cost: block (pimtrain describe cost_model)");
        }
        const ConfigNode* macro = p.resolved.At("pim").Find("macro");
        if (macro == nullptr || macro->IsNull()) {
          throw ConfigError("mode: cost needs pim.macro (the chip to price)");
        }
        Registry<CostModel>::Create(*block);  // its parameters and technology table
      }
    } catch (const Error& e) {
      // ApplySet names its origin "--set KEY"; here the key came from the sweep file, which
      // `where` already names.
      std::string msg = e.what();
      if (msg.rfind("--set ", 0) == 0) msg.erase(0, 6);
      throw ConfigError(where + msg);
    }
    p.config_crc = ConfigCrc(p.resolved);
    spec.points.push_back(std::move(p));
  }
  return spec;
}

namespace {

// Runs `mine` (this rank's points), at most options.jobs at once, each in a worker process, and
// passes each finished point's row to `record`; `idle` runs whenever no worker finished (rank 0
// collects the other ranks' rows there). `prefix` starts each progress line.
void RunShare(const std::vector<const Planned*>& mine, const std::string& out, SweepMode mode,
              const SweepOptions& options, const std::string& prefix,
              const std::function<void(const Json&)>& record, const std::function<void()>& idle) {
  std::vector<Running> running;
  size_t next = 0;
  int done = 0;
  const int to_run = static_cast<int>(mine.size());
  while (next < mine.size() || !running.empty()) {
    while (next < mine.size() && static_cast<int>(running.size()) < options.jobs) {
      const Planned& p = *mine[next++];
      const std::string dir = out + "/" + p.name;
      MakeDirs(dir);
      WriteFileAtomic(dir + "/" + kPointConfig, p.config_yaml);
      ::unlink((dir + "/" + kPointResult).c_str());  // never read an earlier run's result
      running.push_back(
          {SpawnWorker(options.executable, dir, mode), &p, p.name, dir, NowSeconds()});
    }
    // Reap whichever worker finished (polling our own pids only: waitpid(-1) would also reap
    // children that a host process of this library started).
    bool reaped = false;
    for (size_t i = 0; i < running.size(); ++i) {
      int status = 0;
      pid_t r = ::waitpid(running[i].pid, &status, WNOHANG);
      if (r == 0) continue;
      if (r < 0 && errno == EINTR) continue;
      const Planned& p = *running[i].point;
      const std::string name = running[i].name, dir = running[i].dir;
      const double wall = NowSeconds() - running[i].start;
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
      reaped = true;

      Json row;
      row["point"] = p.id;
      Json result;
      const std::string result_path = dir + "/" + kPointResult;
      bool have_result = false;
      if (FileExists(result_path)) {
        try {
          result = Json::parse(ReadFile(result_path));
          have_result = result.is_object() && result.contains("status");
        } catch (const std::exception&) {
          have_result = false;
        }
      }
      const bool ok = r > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && have_result &&
                      result["status"] == "ok";
      row["status"] = ok ? "ok" : "failed";
      const Json metrics = MetricsOrNull(result);
      for (const auto& [k, v] : p.values.items()) row[k] = v;
      for (const auto& [k, v] : metrics.items()) row[k] = v;
      if (row["seconds"].is_null()) row["seconds"] = wall;
      row["dir"] = name;
      row["config_crc"] = p.crc;
      std::string error;
      if (!ok) {
        if (have_result && result.contains("error")) {
          error = result["error"].get<std::string>();
        } else if (r > 0 && WIFSIGNALED(status)) {
          error = "worker killed by signal " + std::to_string(WTERMSIG(status));
        } else if (r > 0 && WIFEXITED(status)) {
          error = "worker exited with code " + std::to_string(WEXITSTATUS(status));
        } else {
          error = "worker lost";
        }
        std::string last = LastLogLine(dir + "/" + kPointLog);
        if (!last.empty() && error.find(last) == std::string::npos &&
            last.find(error) == std::string::npos) {
          error += ": " + last;
        }
        row["error"] = error;
      }
      record(row);
      ++done;
      std::string line = prefix + "[" + std::to_string(done) + "/" + std::to_string(to_run) +
                         "] " + name + " " + p.id + ": ";
      if (ok) {
        std::string acc = FormatMetric(row, "test_accuracy", "test %.2f%%", 100);
        std::string e = FormatMetric(row, "energy_j", "energy %.4g J", 1);
        std::string t = FormatMetric(row, "latency_s", "latency %.4g s", 1);
        std::string w = FormatMetric(row, "tops_per_watt", "%.4g TOPS/W", 1);
        for (const auto* s : {&acc, &e, &t, &w}) {
          if (!s->empty()) line += *s + "  ";
        }
        line += FormatMetric(row, "seconds", "(%.2f s)", 1);
      } else {
        line += "FAILED: " + error + " (log: " + dir + "/" + kPointLog + ")";
      }
      if (options.on_message) options.on_message(line);
      break;
    }
    if (!reaped) {
      if (idle) idle();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

// Rank r's share of the plan: its r-th, r+size-th, ... points.
std::vector<const Planned*> ShareOf(const std::vector<Planned>& plan, int rank, int size) {
  std::vector<const Planned*> mine;
  for (size_t k = static_cast<size_t>(rank); k < plan.size(); k += static_cast<size_t>(size)) {
    mine.push_back(&plan[k]);
  }
  return mine;
}

}  // namespace

void AbandonSweep(SweepRanks& ranks, const std::string& why) {
  if (ranks.rank() == 0 && ranks.size() > 1) ranks.Broadcast(Json{{"error", why}}.dump());
}

SweepOutcome RunSweep(const SweepSpec& spec, const SweepOptions& options) {
  PIM_CHECK(options.jobs >= 1);
  PIM_CHECK(!options.executable.empty());
  SweepRanks* ranks =
      options.ranks != nullptr && options.ranks->size() > 1 ? options.ranks : nullptr;
  PIM_CHECK(ranks == nullptr || ranks->rank() == 0);
  auto say = [&](const std::string& m) {
    if (options.on_message) options.on_message(m);
  };

  SweepOutcome outcome;
  outcome.total = static_cast<int>(spec.points.size());
  std::unique_ptr<ResultsFiles> results;
  std::vector<Planned> plan;
  try {
    MakeDirs(spec.out);
    results = std::make_unique<ResultsFiles>(spec);
    std::vector<const SweepPoint*> todo;
    for (const auto& p : spec.points) {
      if (results->Finished(p.id)) {
        // A finished row from another config (base files or set: edited since) would silently
        // mix two experiments in one table.
        const Json& r = *results->Find(p.id);
        auto crc = r.find("config_crc");
        if (crc != r.end() && crc->is_number_unsigned() &&
            crc->get<uint32_t>() != p.config_crc) {
          throw ConfigError(results->path() + ": point '" + p.id +
                            "' finished with a different config (base or set: changed since); "
                            "use another out: directory or delete its line");
        }
        ++outcome.skipped;
      } else {
        todo.push_back(&p);
      }
    }

    // Directories: a point keeps the one its earlier row names; a new point takes point-<index>
    // unless a row of another point (from before the grid changed) owns it, then the next free
    // number. So extending a grid never overwrites a finished point's run files.
    std::map<std::string, std::string> owner;  // directory name -> point id
    for (const auto& id : results->Ids()) {
      const Json& r = *results->Find(id);
      auto d = r.find("dir");
      if (d != r.end() && d->is_string() && IsPointDirName(d->get<std::string>())) {
        owner.emplace(d->get<std::string>(), id);
      }
    }
    int spare = static_cast<int>(spec.points.size());
    for (const SweepPoint* p : todo) {
      Planned planned;
      planned.id = p->id;
      planned.config_yaml = ToYaml(p->resolved);
      planned.values = PointValues(spec, *p);
      planned.crc = p->config_crc;
      if (const Json* r = results->Find(p->id)) {
        auto d = r->find("dir");
        if (d != r->end() && d->is_string() && IsPointDirName(d->get<std::string>()) &&
            owner.at(d->get<std::string>()) == p->id) {
          planned.name = d->get<std::string>();
        }
      }
      if (planned.name.empty()) {
        std::string name = PointDirName(p->index);
        while (owner.count(name) > 0 && owner.at(name) != p->id) name = PointDirName(spare++);
        owner[name] = p->id;
        planned.name = name;
      }
      plan.push_back(std::move(planned));
    }
    results->WriteCsv();  // the table of what is already done, even if nothing runs
  } catch (const Error& e) {
    if (ranks != nullptr) AbandonSweep(*ranks, e.what());
    throw;
  }
  const int size = ranks == nullptr ? 1 : ranks->size();
  if (ranks != nullptr) ranks->Broadcast(PlanJson(spec.out, spec.mode, plan).dump());
  say("sweep: " + std::to_string(outcome.total) + " points (" + std::to_string(outcome.skipped) +
      " finished earlier), running " + std::to_string(plan.size()) + " with " +
      std::to_string(options.jobs) + " job" + (options.jobs > 1 ? "s" : "") +
      (size > 1 ? " on each of " + std::to_string(size) + " MPI ranks" : "") + " -> " +
      spec.out);

  auto record = [&](const Json& row) {
    results->Put(row.at("point").get<std::string>(), row);
    if (row.at("status") == "ok") {
      ++outcome.ran;
    } else {
      ++outcome.failed;
    }
  };
  int peers_done = 0;
  auto collect = [&] {
    std::string text;
    while (ranks != nullptr && ranks->Poll(&text)) {
      Json m = Json::parse(text);
      if (m.contains("row")) record(m["row"]);
      if (m.contains("done")) ++peers_done;
    }
  };
  try {
    RunShare(ShareOf(plan, 0, size), spec.out, spec.mode, options,
             size > 1 ? "rank 0: " : "", record, collect);
    while (peers_done < size - 1) {
      collect();
      if (peers_done < size - 1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::vector<std::string> ids;
    for (const auto& p : plan) ids.push_back(p.id);
    results->Reorder(ids);
  } catch (const std::exception& e) {
    // The other ranks are running their points: end them too rather than leave them waiting.
    if (ranks != nullptr) ranks->Abort(e.what());
    throw;
  }
  say("sweep: " + std::to_string(outcome.ran) + " ran, " + std::to_string(outcome.skipped) +
      " skipped, " + std::to_string(outcome.failed) + " failed; results: " + spec.out + "/" +
      kResultsJsonl + ", " + spec.out + "/" + kResultsCsv);
  return outcome;
}

SweepOutcome RunSweepPeer(const SweepOptions& options) {
  PIM_CHECK(options.ranks != nullptr && options.ranks->rank() > 0);
  PIM_CHECK(options.jobs >= 1);
  PIM_CHECK(!options.executable.empty());
  SweepRanks& ranks = *options.ranks;
  SweepOutcome outcome;
  Json message = Json::parse(ranks.Broadcast(""));
  if (message.contains("error")) {
    outcome.abandoned = true;
    return outcome;
  }
  try {
    std::vector<Planned> plan;
    for (const auto& p : message.at("points")) {
      Planned planned;
      planned.id = p.at("id").get<std::string>();
      planned.name = p.at("dir").get<std::string>();
      planned.config_yaml = p.at("config").get<std::string>();
      planned.values = p.at("values");
      planned.crc = p.at("config_crc").get<uint32_t>();
      plan.push_back(std::move(planned));
    }
    const std::string out = message.at("out").get<std::string>();
    const SweepMode mode = ParseSweepMode(message.at("mode").get<std::string>(), "plan");
    auto record = [&](const Json& row) {
      ranks.Send(Json{{"row", row}}.dump());
      if (row.at("status") == "ok") {
        ++outcome.ran;
      } else {
        ++outcome.failed;
      }
    };
    RunShare(ShareOf(plan, ranks.rank(), ranks.size()), out, mode, options,
             "rank " + std::to_string(ranks.rank()) + ": ", record, nullptr);
    ranks.Send(Json{{"done", true}}.dump());
  } catch (const std::exception& e) {
    ranks.Abort(e.what());
  }
  return outcome;
}

void RunSweepPoint(const std::string& point_dir, SweepMode mode) {
  const double t0 = NowSeconds();
  const std::string result_path = point_dir + "/" + kPointResult;
  Json result;
  try {
    ConfigNode config = ValidateRoot(LoadYamlFile(point_dir + "/" + kPointConfig));
    result["status"] = "ok";
    result["test_accuracy"] = nullptr;
    if (mode == SweepMode::kTrain) {
      // A worker killed mid-training left a checkpoint: continue it when it is this config's
      // and has epochs left (a finished one has no cost report to give, so it is retrained).
      bool resume = false;
      const std::string ckpt = point_dir + "/checkpoint.bin";
      if (FileExists(ckpt)) {
        try {
          CheckpointInfo info = ReadCheckpointInfo(ckpt);
          ConfigNode saved = ValidateRoot(ParseYaml(info.config_yaml, ckpt));
          resume = FirstDifference(saved, config, {"threads", "limits", "train.on_nonfinite"})
                       .empty() &&
                   info.epochs_done < config.At("train").GetInt("epochs");
        } catch (const Error&) {
          resume = false;  // unreadable or torn: start afresh
        }
      }
      Session session(config);
      SessionCallbacks cb;
      cb.on_epoch = [](const EpochMetrics& m) {
        std::printf("epoch %lld  loss %.4f  train %.4f  test %.4f  %.2f s\n",
                    static_cast<long long>(m.epoch), m.train_loss, m.train_accuracy,
                    m.test_accuracy, m.seconds);
        std::fflush(stdout);
      };
      cb.on_info = [](const std::string& msg) {
        std::printf("%s\n", msg.c_str());
        std::fflush(stdout);
      };
      TrainSummary s = session.Train(point_dir, resume, cb);
      result["test_accuracy"] = s.test_accuracy;
      if (s.has_cost) {
        result["energy_j"] = s.cost.energy_pj * 1e-12;
        result["latency_s"] = s.cost.seconds;
        result["tops_per_watt"] = s.cost.tops_per_watt;
      }
    } else {
      // `pimtrain cost`'s headline figures: the chip's arrays filled with one dense workload,
      // priced at the config's operating point.
      std::unique_ptr<CostModel> model = Registry<CostModel>::Create(config.At("cost"));
      Workload dense;
      dense.input_sparsity = 0;
      CostReport r = BenchmarkMacro(config, *model, dense, model->operating_point());
      WriteFileAtomic(point_dir + "/cost.json", r.ToJson() + "\n");
      result["energy_j"] = r.energy_pj * 1e-12;
      result["latency_s"] = r.seconds;
      result["tops_per_watt"] = r.tops_per_watt;
    }
    result["seconds"] = NowSeconds() - t0;
  } catch (const Error& e) {
    Json failed;
    failed["status"] = "failed";
    failed["error"] = e.what();
    failed["seconds"] = NowSeconds() - t0;
    WriteFileAtomic(result_path, failed.dump() + "\n");
    throw;
  }
  WriteFileAtomic(result_path, result.dump() + "\n");
}

}  // namespace pim
