// The CUDA IPC wrapper: without a GPU every call answers UNAVAILABLE with the reason; with one, a
// child process exports a device buffer and this process opens it and reads the child's values.
#include "common/cuda/ipc.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_split.h"
#include "common/cuda/device.h"
#include "gtest/gtest.h"

extern char** environ;

namespace a2sf::cuda_ipc {
namespace {

constexpr char kChildVariable[] = "A2SF_CUDA_IPC_EXPORT_CHILD";
constexpr size_t kValues = 4096;

float Pattern(size_t i) { return float(i % 97) * 0.25f + 1.0f; }

// The exporting child (this binary re-run with kChildVariable set): exports a buffer holding the
// pattern, prints "memory_hex event_hex bytes" and keeps the buffer until its stdin closes.
int RunExportChild() {
  absl::StatusOr<std::unique_ptr<ExportedDeviceBuffer>> buffer = ExportedDeviceBuffer::Create(kValues * 4);
  if (!buffer.ok()) {
    std::printf("error %s\n", std::string(buffer.status().message()).c_str());
    return 1;
  }
  std::vector<float> values(kValues);
  for (size_t i = 0; i < kValues; ++i) values[i] = Pattern(i);
  if (!CopyToDevice((*buffer)->device_pointer(), values.data(), kValues * 4).ok() ||
      !RecordEvent((*buffer)->event()).ok()) {
    std::printf("error copy\n");
    return 1;
  }
  std::printf("%s %s %zu\n", absl::BytesToHexString((*buffer)->memory_handle()).c_str(),
              absl::BytesToHexString((*buffer)->event_handle()).c_str(), (*buffer)->bytes());
  std::fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  return 0;
}

const int kChildExit = [] {
  if (std::getenv(kChildVariable) != nullptr) std::_Exit(RunExportChild());
  return 0;
}();

TEST(CudaIpc, AnswersUnavailableWithoutAGpu) {
  if (CudaDeviceCount().ok()) GTEST_SKIP() << "a GPU is present: the no-GPU answers are not observable here";
  absl::StatusOr<DeviceId> device = CurrentDevice();
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kUnavailable) << device.status();
  absl::StatusOr<std::unique_ptr<ExportedDeviceBuffer>> exported = ExportedDeviceBuffer::Create(1024);
  ASSERT_FALSE(exported.ok());
  EXPECT_EQ(exported.status().code(), absl::StatusCode::kUnavailable) << exported.status();
  EXPECT_NE(exported.status().message().find("CUDA IPC"), std::string::npos) << exported.status();
  const std::string handle(64, '\x01');
  absl::StatusOr<std::unique_ptr<ImportedDeviceBuffer>> imported = ImportedDeviceBuffer::Open(handle, handle, 1024);
  ASSERT_FALSE(imported.ok());
  EXPECT_EQ(imported.status().code(), absl::StatusCode::kUnavailable) << imported.status();
  EXPECT_NE(imported.status().message().find("cudaIpcOpenMemHandle"), std::string::npos) << imported.status();
}

TEST(CudaIpc, HandlesOfTheWrongSizeAreInvalidArguments) {
  const std::string good(64, '\0');
  for (const std::string& bad : {std::string(), std::string(63, '\0'), std::string(65, '\0')}) {
    EXPECT_EQ(ImportedDeviceBuffer::Open(bad, good, 16).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ImportedDeviceBuffer::Open(good, bad, 16).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(ExportedDeviceBuffer::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
}

// Starts the exporting child; fills its pid, the write end of its stdin and its answer line.
bool StartChild(pid_t* pid, int* stdin_fd, std::string* line) {
  int to_child[2], from_child[2];
  if (pipe(to_child) != 0 || pipe(from_child) != 0) return false;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, to_child[0], 0);
  posix_spawn_file_actions_adddup2(&actions, from_child[1], 1);
  posix_spawn_file_actions_addclose(&actions, to_child[1]);
  posix_spawn_file_actions_addclose(&actions, from_child[0]);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.push_back(*e);
  env_strings.push_back(std::string(kChildVariable) + "=1");
  std::vector<char*> env;
  for (std::string& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  char self[] = "/proc/self/exe";
  char* argv[] = {self, nullptr};
  const int spawned = posix_spawn(pid, "/proc/self/exe", &actions, nullptr, argv, env.data());
  posix_spawn_file_actions_destroy(&actions);
  close(to_child[0]);
  close(from_child[1]);
  if (spawned != 0) return false;
  *stdin_fd = to_child[1];
  char c;
  while (read(from_child[0], &c, 1) == 1 && c != '\n') line->push_back(c);
  close(from_child[0]);
  return true;
}

TEST(CudaIpc, AChildExportsADeviceBufferAndThisProcessReadsIt) {
  absl::StatusOr<int> count = CudaDeviceCount();
  if (!count.ok()) GTEST_SKIP() << "skipping the two-process GPU test: " << count.status().message();
  pid_t pid = 0;
  int child_stdin = -1;
  std::string line;
  ASSERT_TRUE(StartChild(&pid, &child_stdin, &line));
  const std::vector<std::string> fields = absl::StrSplit(line, ' ');
  ASSERT_EQ(fields.size(), 3u) << "child said: " << line;
  const std::string memory = absl::HexStringToBytes(fields[0]), event = absl::HexStringToBytes(fields[1]);
  {
    absl::StatusOr<std::unique_ptr<ImportedDeviceBuffer>> imported =
        ImportedDeviceBuffer::Open(memory, event, kValues * 4);
    ASSERT_TRUE(imported.ok()) << imported.status();
    std::vector<float> values(kValues);
    ASSERT_TRUE(CopyToHost(values.data(), (*imported)->device_pointer(), kValues * 4).ok());
    for (size_t i = 0; i < kValues; ++i) ASSERT_EQ(values[i], Pattern(i)) << i;
    // An offer that claims more than the allocation holds is refused, not read past.
    absl::StatusOr<std::unique_ptr<ImportedDeviceBuffer>> too_big =
        ImportedDeviceBuffer::Open(memory, event, kValues * 4 + (size_t{1} << 30));
    EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument) << too_big.status();
  }
  close(child_stdin);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace a2sf::cuda_ipc
