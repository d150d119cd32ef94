// PIM_CHECK failure handler: a pimtrain bug, reported with file and line, then abort.
#include "pimtrain/base/error.h"

#include <cstdio>
#include <cstdlib>

namespace pim {

void CheckFailed(const char* file, int line, const char* expr, const std::string& msg) {
  std::fprintf(stderr, "pimtrain internal error: %s:%d: check failed: %s%s%s\n", file, line, expr,
               msg.empty() ? "" : ": ", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace pim
