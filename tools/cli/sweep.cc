// `pimtrain sweep SWEEP.yaml [--jobs N] [--out DIR]`, and `pimtrain sweep --worker DIR`, the
// process that runs one point for it.
#include "sweep.h"

#include <unistd.h>

#include <climits>
#include <cstdio>

#include "pimtrain/base/error.h"
#include "pimtrain/sim/sweep.h"

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

}  // namespace

std::unique_ptr<SweepCommand> AddSweepCommand(CLI::App& app) {
  auto cmd = std::make_unique<SweepCommand>();
  cmd->app = app.add_subcommand(
      "sweep", "run every point of a design-space sweep (docs/sweeps.md); resumable");
  cmd->app->add_option("sweep", cmd->file, "SWEEP.yaml: base, set, grid or points, out, mode");
  cmd->app->add_option("--jobs,-j", cmd->jobs, "points run at once, each in its own process")
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
  if (cmd.file.empty()) throw ConfigError("sweep needs a SWEEP.yaml (docs/sweeps.md)");
  SweepSpec spec = LoadSweep(cmd.file, cmd.out);
  SweepOptions options;
  options.jobs = cmd.jobs;
  options.executable = SelfExecutable();
  options.on_message = [](const std::string& m) {
    std::printf("%s\n", m.c_str());
    std::fflush(stdout);
  };
  SweepOutcome o = RunSweep(spec, options);
  return o.failed > 0 ? 1 : 0;
}

}  // namespace pim
