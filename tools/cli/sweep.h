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

class BatchGroup;
// Under `mpirun -np N` (N > 1): MPI started (MPI_Init; finalized when the result is destroyed),
// the ranks as the BatchGroup of a data-parallel train or eval (docs/scaling.md). nullptr
// without mpirun or with one rank. UnsupportedError under mpirun when built without MPI.
std::unique_ptr<BatchGroup> StartBatchGroup();

}  // namespace pim
