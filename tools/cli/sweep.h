// `pimtrain sweep`: the command-line side of sim/sweep.h.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

namespace pim {

struct SweepCommand {
  CLI::App* app = nullptr;
  std::string file, out, worker, mode = "train";
  int jobs = 1;
};

// Adds the `sweep` subcommand (and its hidden worker mode) to `app`.
std::unique_ptr<SweepCommand> AddSweepCommand(CLI::App& app);
// Runs it once parsed: 0 when every point finished, 1 when some failed; user errors throw
// pim::Error (exit 2 in main).
int RunSweepCommand(const SweepCommand& cmd);

}  // namespace pim
