// Error types: user mistakes (typed exceptions, exit code 2) vs simulator bugs (PIM_CHECK aborts).
#pragma once

#include <stdexcept>
#include <string>

namespace pim {

// `text` on one line: control characters (line breaks included), which quoted user input can
// carry into a message, written as escapes (\n, \r, \t, \xNN).
std::string OneLineMessage(const std::string& text);

// Base of every error caused by the user's input (config, files, data). The message is one line
// that names what was wrong and where; the CLI prints it and exits with code 2.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(OneLineMessage(what)) {}
  explicit Error(const char* what) : Error(std::string(what)) {}
};

// A config key is unknown, has the wrong type, or is out of range.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A file cannot be read or written.
class IoError : public Error {
 public:
  using Error::Error;
};

// A file was read but its contents are malformed (bad magic, truncated, labels out of range).
class DataError : public Error {
 public:
  using Error::Error;
};

// The request is well-formed but pimtrain does not support it (yet).
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

// Aborts the process with file and line: used for invariants whose failure is a pimtrain bug.
[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, const std::string& msg);

}  // namespace pim

#define PIM_CHECK(cond)                                              \
  do {                                                               \
    if (!(cond)) ::pim::CheckFailed(__FILE__, __LINE__, #cond, ""); \
  } while (0)

#define PIM_CHECK_MSG(cond, msg)                                        \
  do {                                                                  \
    if (!(cond)) ::pim::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)
