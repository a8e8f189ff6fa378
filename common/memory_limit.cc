#include "common/memory_limit.h"

#include <unistd.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/files.h"

namespace a2sf {
uint64_t MemoryLimitFrom(uint64_t physical, const std::string& proc_self_cgroup,
                         const std::function<std::optional<std::string>(const std::string&)>& read) {
  std::vector<std::string> files;
  for (absl::string_view line : absl::StrSplit(proc_self_cgroup, '\n', absl::SkipEmpty())) {
    const std::vector<absl::string_view> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    // The group and every group above it up to the mount's root: a limit on any of them holds.
    std::vector<std::string> groups = {""};
    std::string group;
    for (absl::string_view part : absl::StrSplit(fields[2], '/', absl::SkipEmpty())) {
      absl::StrAppend(&group, "/", part);
      groups.push_back(group);
    }
    const std::vector<absl::string_view> controllers = absl::StrSplit(fields[1], ',');
    const bool v2 = fields[0] == "0" && fields[1].empty();
    const bool v1_memory = std::find(controllers.begin(), controllers.end(), "memory") != controllers.end();
    for (const std::string& g : groups) {
      if (v2) {
        for (const char* root : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) files.push_back(root + g + "/memory.max");
      } else if (v1_memory) {
        files.push_back("/sys/fs/cgroup/memory" + g + "/memory.limit_in_bytes");
      }
    }
  }
  uint64_t limit = physical;
  for (const std::string& file : files) {
    const std::optional<std::string> text = read(file);
    uint64_t bytes = 0;
    if (!text.has_value() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &bytes)) continue;
    if (bytes >= (uint64_t{1} << 62)) continue;  // v1's "no limit" (2^63 - a page)
    if (bytes > 0) limit = std::min(limit, bytes);
  }
  return limit;
}

uint64_t MemoryLimitBytes() {
  const uint64_t physical = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
  auto read = [](const std::string& path) -> std::optional<std::string> {
    absl::StatusOr<std::string> text = ReadFileToString(path);
    return text.ok() ? std::optional<std::string>(*std::move(text)) : std::nullopt;
  };
  return MemoryLimitFrom(physical, read("/proc/self/cgroup").value_or(""), read);
}

}  // namespace a2sf
