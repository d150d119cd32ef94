// `pimtrain report`: an HTML page with plots of a training run or a sweep (docs/report.md).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

namespace pim {

struct ReportCommand {
  CLI::App* app = nullptr;
  std::string dir, out;
};

// Adds the `report` subcommand to `app`.
std::unique_ptr<ReportCommand> AddReportCommand(CLI::App& app);
// Runs it once parsed: checks the directory, prices a chip preset's published figures, and runs
// python/pimtrain/report.py (matplotlib) to draw the page. 0 on success; user errors (a bad
// directory, no Python or matplotlib) throw pim::Error or return 2 after one line on stderr.
int RunReportCommand(const ReportCommand& cmd);

}  // namespace pim
