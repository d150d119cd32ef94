// File helpers: whole-file reads (gzip detected by magic), atomic writes, CRC-32.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pim {

// Reads a whole file; if it starts with the gzip magic (1f 8b) it is inflated. IoError if
// missing or unreadable, DataError if the gzip stream is corrupt or truncated.
std::vector<uint8_t> ReadFileMaybeGzip(const std::string& path);
// The first `n` bytes of the file's contents (inflated if gzip; fewer if the contents are
// shorter), inflating no further than that. `*total` = the size of the whole contents: exact
// for a raw file or a gzip stream that ended within the prefix, else the gzip trailer's ISIZE
// (the size mod 2^32, unchecked against the data past the prefix: a caller checks it against
// what it expects and reads the whole file when they differ). IoError / DataError as above.
std::vector<uint8_t> ReadFilePrefixMaybeGzip(const std::string& path, size_t n, uint64_t* total);
// Reads a whole file as is. IoError on failure.
std::string ReadFile(const std::string& path);
// Writes to PATH.tmp.PID, fsyncs, renames over PATH, fsyncs the directory: readers see the old
// or the new contents, never a half-written file. IoError on failure (the temp file is removed).
void WriteFileAtomic(const std::string& path, std::string_view contents);
// Removes the PATH.tmp.PID files in `dir` that a killed writer left behind: those whose PID is
// no running process (a live writer's file is kept). Returns how many it removed; a missing
// directory is 0. Used when a run is resumed.
int RemoveStaleTempFiles(const std::string& dir);
// Creates a directory and its parents; IoError if that fails or a file is in the way.
void MakeDirs(const std::string& path);
bool FileExists(const std::string& path);
// zlib's CRC-32.
uint32_t Crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace pim
