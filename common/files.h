// Small file helpers shared by loaders and servers.
#ifndef A2SF_COMMON_FILES_H_
#define A2SF_COMMON_FILES_H_

#include <string>

#include "absl/status/statusor.h"

namespace a2sf {

// Reads a whole file; NOT_FOUND naming the path when it cannot be opened.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace a2sf

#endif  // A2SF_COMMON_FILES_H_
