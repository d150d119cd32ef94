// `pimtrain report RUN_OR_SWEEP_DIR [--out DIR]`. The C++ side checks the directory (so that a
// bad one is a one-line error before any plotting), computes what only the simulator knows (a
// chip preset's published figures against the cost model, as `pimtrain cost PRESET` prints
// them), and runs python/pimtrain/report.py under Debian's Python to draw the plots with
// matplotlib and write the page.
#include "report.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/cost/cost_model.h"
#include "pimtrain/sim/figures.h"
#include "pimtrain/sim/results_reader.h"
#include "pimtrain/sim/session.h"

namespace pim {
namespace {

constexpr const char* kDefaultPython = "/usr/bin/python3";

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Checks metrics.jsonl line by line: every line a JSON object with the per-epoch fields, the
// last one ending in a newline (the trainer rewrites the file whole, atomically, so a line
// without one was cut short by something else).
void CheckMetrics(const std::string& path) {
  const std::string text = ReadFile(path);
  if (text.empty()) throw DataError(path + ": empty (the run has not finished an epoch)");
  if (text.back() != '\n') {
    int64_t lines = 1;
    for (char c : text) lines += c == '\n' ? 1 : 0;
    throw DataError(path + ":" + std::to_string(lines) +
                    ": truncated (the last line has no end; the file was cut short)");
  }
  std::istringstream in(text);
  int64_t n = 0, epochs = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw DataError(path + ":" + std::to_string(n) + ": not a JSON object (malformed line)");
    }
    if (!j.is_object()) throw DataError(path + ":" + std::to_string(n) + ": not a JSON object");
    for (const char* key :
         {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}) {
      auto it = j.find(key);
      if (it == j.end() || !it->is_number()) {
        throw DataError(path + ":" + std::to_string(n) + ": no number '" + key +
                        "' (not a pimtrain metrics line)");
      }
    }
    ++epochs;
  }
  if (epochs == 0) throw DataError(path + ": no epochs");
}

// A chip preset's `expected:` figures against the model, as `pimtrain cost PRESET --json`
// gives them ("expected"); "" when the run's config has none.
std::string PublishedFigures(const ConfigNode& config) {
  const ConfigNode* expected = config.Find("expected");
  const ConfigNode* cost = config.Find("cost");
  if (expected == nullptr || expected->IsNull() || cost == nullptr || cost->IsNull()) return "";
  const ConfigNode* macro = config.At("pim").Find("macro");
  if (macro == nullptr || macro->IsNull()) return "";
  try {
    std::unique_ptr<CostModel> model = Registry<CostModel>::Create(*cost);
    return FigureChecksJson(CheckExpected(config, *model));
  } catch (const Error& e) {
    // The run is still worth a page; its table says why it is missing.
    return nlohmann::json{{"error", e.what()}}.dump();
  }
}

std::string ReportScript() {
  if (const char* env = std::getenv("PIMTRAIN_REPORT_SCRIPT"); env != nullptr && *env) {
    if (!FileExists(env)) {
      throw IoError(std::string("PIMTRAIN_REPORT_SCRIPT=") + env + ": no such file");
    }
    return env;
  }
  const std::string script = std::string(PIMTRAIN_SOURCE_DIR) + "/python/pimtrain/report.py";
  if (!FileExists(script)) {
    throw IoError(script + ": report script not found (set PIMTRAIN_REPORT_SCRIPT to "
                  "python/pimtrain/report.py of the pimtrain sources)");
  }
  return script;
}

std::string Python() {
  const char* env = std::getenv("PIMTRAIN_PYTHON");
  std::string python = env != nullptr && *env ? env : kDefaultPython;
  if (::access(python.c_str(), X_OK) != 0) {
    throw IoError(python + ": no Python to draw the report with (apt-get install python3 "
                  "python3-matplotlib, or set PIMTRAIN_PYTHON)");
  }
  return python;
}

// Runs argv, stdout and stderr passed through; returns its exit code (-1 when killed).
int Run(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = ::fork();
  if (pid < 0) throw IoError(std::string("cannot start Python: ") + std::strerror(errno));
  if (pid == 0) {
    ::setenv("MPLBACKEND", "Agg", 1);  // no display
    ::execv(argv[0], argv.data());
    static const char kMsg[] = "pimtrain: error: cannot execute Python\n";
    ssize_t ignored = ::write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    (void)ignored;
    ::_exit(2);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw IoError(std::string("waiting for Python: ") + std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

std::unique_ptr<ReportCommand> AddReportCommand(CLI::App& app) {
  auto cmd = std::make_unique<ReportCommand>();
  cmd->app = app.add_subcommand(
      "report", "an HTML page with plots of a training run or a sweep (docs/report.md)");
  cmd->app->add_option("dir", cmd->dir, "a run directory (pimtrain train --out) or a sweep's");
  cmd->app->add_option("--out", cmd->out, "where to write index.html and its PNGs "
                                          "(default DIR/report)");
  return cmd;
}

int RunReportCommand(const ReportCommand& cmd) {
  if (cmd.dir.empty()) throw ConfigError("report needs a run or sweep directory");
  std::string dir = cmd.dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (!FileExists(dir)) throw IoError(dir + ": no such directory");
  if (!IsDirectory(dir)) throw IoError(dir + ": not a directory (report takes a run's directory)");

  std::string kind, figures_json;
  if (FileExists(dir + "/results.jsonl")) {
    kind = "sweep";
    const std::string path = dir + "/results.jsonl";
    SweepResults r = ReadSweepResults(path);
    if (r.dropped_torn_tail) {
      throw DataError(path + ": truncated (the last line has no end; the file was cut short)");
    }
    if (r.points.empty()) throw DataError(path + ": no points (the sweep has not finished any)");
  } else if (FileExists(dir + "/metrics.jsonl") || FileExists(dir + "/config.yaml")) {
    kind = "run";
    for (const char* f : {"metrics.jsonl", "config.yaml"}) {
      if (!FileExists(dir + "/" + f)) {
        throw IoError(dir + "/" + f + ": missing (not a complete pimtrain run directory)");
      }
    }
    CheckMetrics(dir + "/metrics.jsonl");
    if (FileExists(dir + "/summary.json")) {
      try {
        if (!nlohmann::json::parse(ReadFile(dir + "/summary.json")).is_object()) {
          throw DataError(dir + "/summary.json: not a JSON object");
        }
      } catch (const nlohmann::json::exception&) {
        throw DataError(dir + "/summary.json: malformed (truncated or not JSON)");
      }
    }
    ConfigNode config = ValidateRoot(LoadYamlFile(dir + "/config.yaml"));
    figures_json = PublishedFigures(config);
  } else {
    throw IoError(dir + ": not a pimtrain run (no metrics.jsonl, config.yaml) or sweep "
                  "directory (no results.jsonl)");
  }

  const std::string out = cmd.out.empty() ? dir + "/report" : cmd.out;
  const std::string python = Python();
  std::vector<std::string> args = {python, ReportScript(), dir, "--kind", kind, "--out", out};
  std::string figures_file;
  if (!figures_json.empty()) {
    char tmpl[] = "/tmp/pimtrain-figures-XXXXXX";
    int fd = ::mkstemp(tmpl);
    if (fd < 0) {
      throw IoError(std::string("cannot create a temporary file: ") + std::strerror(errno));
    }
    ::close(fd);
    figures_file = tmpl;
    WriteFileAtomic(figures_file, figures_json + "\n");
    args.push_back("--figures");
    args.push_back(figures_file);
  }
  struct Unlink {
    const std::string& path;
    ~Unlink() {
      if (!path.empty()) ::unlink(path.c_str());
    }
  } unlink_figures{figures_file};
  int code = Run(args);
  if (code == 0) return 0;
  if (code == 2) return 2;  // report.py printed the one-line reason
  throw IoError(args[1] + " failed (exit code " + std::to_string(code) + ")");
}

}  // namespace pim
