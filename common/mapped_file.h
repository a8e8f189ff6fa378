// MappedFile: a read-only memory map of a whole file (weights are used in place, never copied).
// Movable, not copyable; unmaps on destruction. Thread-safe to read.
#ifndef A2SF_COMMON_MAPPED_FILE_H_
#define A2SF_COMMON_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace a2sf {

class MappedFile {
 public:
  // NOT_FOUND for a missing file, INVALID_ARGUMENT for a directory or an empty file.
  static absl::StatusOr<MappedFile> Open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool Contains(const void* p) const { return p >= data_ && p < data_ + size_; }
  // Drops this process's resident pages wholly inside [p, p + bytes) (madvise DONTNEED): for ranges
  // that were copied elsewhere and will not be read again. Reading them later still works (the file
  // is read again). Ranges outside the file are ignored.
  void Release(const void* p, size_t bytes) const;

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace a2sf

#endif  // A2SF_COMMON_MAPPED_FILE_H_
