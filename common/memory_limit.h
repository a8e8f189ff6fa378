// How much memory this process may use: the machine's physical memory, or less where its cgroup
// says so (v2 memory.max, v1 memory.limit_in_bytes) -- what a container's memory limit (Kubernetes
// resources.limits.memory) becomes. Defaults sized as "a share of memory" (the cache manager's
// --max_store_bytes) start from it, so a 4 GiB container on a 64 GiB node sizes from 4 GiB.
// Stateless; thread-safe.
#ifndef A2SF_COMMON_MEMORY_LIMIT_H_
#define A2SF_COMMON_MEMORY_LIMIT_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace a2sf {

// min(physical memory, every memory limit of this process's cgroups).
uint64_t MemoryLimitBytes();

// The rule, given physical memory, /proc/self/cgroup's text and a file reader (nullopt: unreadable).
// Each cgroup line "id:controllers:path" names a v2 group ("0::path": memory.max under
// /sys/fs/cgroup or /sys/fs/cgroup/unified) or, with "memory" among its controllers, a v1 group
// (memory.limit_in_bytes under /sys/fs/cgroup/memory); the group, every group above it (a slice's
// limit holds for what it contains) and the mount's root (a container sees its own group there) are
// read. "max", v1's "no limit" (2^63 rounded to a page)
// and text that is not a number count as no limit.
uint64_t MemoryLimitFrom(uint64_t physical, const std::string& proc_self_cgroup,
                         const std::function<std::optional<std::string>(const std::string&)>& read);

}  // namespace a2sf

#endif  // A2SF_COMMON_MEMORY_LIMIT_H_
