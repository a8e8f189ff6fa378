// MemoryLimitFrom: cgroup v2 and v1 limits lower the physical memory; "max", v1's no-limit value,
// unreadable files and garbage do not. MemoryLimitBytes on this machine is positive and at most the
// physical memory.
#include "common/memory_limit.h"

#include <unistd.h>

#include <map>

#include "gtest/gtest.h"

namespace a2sf {
namespace {

constexpr uint64_t kPhysical = uint64_t{64} << 30;

// A reader over `files` (others unreadable).
std::function<std::optional<std::string>(const std::string&)> Reader(std::map<std::string, std::string> files) {
  return [files](const std::string& path) -> std::optional<std::string> {
    auto it = files.find(path);
    if (it == files.end()) return std::nullopt;
    return it->second;
  };
}

TEST(MemoryLimit, CgroupV2GroupLimit) {
  EXPECT_EQ(MemoryLimitFrom(kPhysical, "0::/kubepods/pod1/c1\n",
                            Reader({{"/sys/fs/cgroup/kubepods/pod1/c1/memory.max", "4294967296\n"}})),
            uint64_t{4} << 30);
  // A container in its own cgroup namespace sees its group at the root.
  EXPECT_EQ(MemoryLimitFrom(kPhysical, "0::/\n", Reader({{"/sys/fs/cgroup/memory.max", "1073741824\n"}})),
            uint64_t{1} << 30);
  EXPECT_EQ(MemoryLimitFrom(kPhysical, "0::/\n", Reader({{"/sys/fs/cgroup/memory.max", "max\n"}})), kPhysical);
}

// A limit on a group above the process's (a systemd slice, a pod around its containers) holds too.
TEST(MemoryLimit, ALimitOnAnEnclosingGroupHolds) {
  EXPECT_EQ(MemoryLimitFrom(kPhysical, "0::/kubepods/pod1/c1\n",
                            Reader({{"/sys/fs/cgroup/kubepods/pod1/memory.max", "2147483648"},
                                    {"/sys/fs/cgroup/kubepods/pod1/c1/memory.max", "max"}})),
            uint64_t{2} << 30);
  EXPECT_EQ(MemoryLimitFrom(kPhysical, "4:memory:/system.slice/a2sf.service\n",
                            Reader({{"/sys/fs/cgroup/memory/system.slice/memory.limit_in_bytes", "1073741824"}})),
            uint64_t{1} << 30);
}

TEST(MemoryLimit, CgroupV1MemoryControllerLimit) {
  const std::string cgroup = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n";
  EXPECT_EQ(MemoryLimitFrom(kPhysical, cgroup,
                            Reader({{"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "2147483648"}})),
            uint64_t{2} << 30);
  EXPECT_EQ(MemoryLimitFrom(kPhysical, cgroup,
                            Reader({{"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712"}})),
            kPhysical);
  // A controller list that holds "memory" among others.
  EXPECT_EQ(MemoryLimitFrom(kPhysical, "5:cpu,memory:/g\n",
                            Reader({{"/sys/fs/cgroup/memory/g/memory.limit_in_bytes", "3221225472"}})),
            uint64_t{3} << 30);
}

TEST(MemoryLimit, TheSmallestLimitWinsAndNothingReadableMeansPhysical) {
  EXPECT_EQ(MemoryLimitFrom(kPhysical, "4:memory:/a\n0::/a\n",
                            Reader({{"/sys/fs/cgroup/memory/a/memory.limit_in_bytes", "8589934592"},
                                    {"/sys/fs/cgroup/a/memory.max", "6442450944"}})),
            uint64_t{6} << 30);
  EXPECT_EQ(MemoryLimitFrom(uint64_t{1} << 30, "0::/\n", Reader({{"/sys/fs/cgroup/memory.max", "4294967296"}})),
            uint64_t{1} << 30)
      << "a limit above physical memory does not raise it";
  EXPECT_EQ(MemoryLimitFrom(kPhysical, "", Reader({})), kPhysical);
  EXPECT_EQ(MemoryLimitFrom(kPhysical, "garbage\n0::/\n", Reader({{"/sys/fs/cgroup/memory.max", "lots"}})), kPhysical);
  EXPECT_EQ(MemoryLimitFrom(kPhysical, "0::/\n", Reader({{"/sys/fs/cgroup/memory.max", "0"}})), kPhysical);
}

TEST(MemoryLimit, ThisMachine) {
  const uint64_t physical = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
  EXPECT_GT(MemoryLimitBytes(), 0u);
  EXPECT_LE(MemoryLimitBytes(), physical);
}

}  // namespace
}  // namespace a2sf
