#include "common/cuda/ipc_child.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace a2sf::cuda_ipc {
namespace {

constexpr char kChildVariable[] = "A2SF_CUDA_IPC_EXPORT_CHILD";

int ExportAndWait(const std::vector<float>& values) {
  absl::StatusOr<std::unique_ptr<ExportedDeviceBuffer>> buffer = ExportedDeviceBuffer::Create(values.size() * 4);
  absl::Status filled = buffer.ok() ? CopyToDevice((*buffer)->device_pointer(), values.data(), values.size() * 4)
                                    : buffer.status();
  if (filled.ok()) filled = RecordEvent((*buffer)->event());
  if (!filled.ok()) {
    std::printf("error %s\n", std::string(filled.message()).c_str());
    return 1;
  }
  const ExportedDeviceBuffer& b = **buffer;
  std::printf("ok %s %s %zu %s %s\n", absl::BytesToHexString(b.memory_handle()).c_str(),
              absl::BytesToHexString(b.event_handle()).c_str(), b.bytes(), b.device().uuid.c_str(),
              b.device().pci_bus_id.c_str());
  std::fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  return 0;
}

}  // namespace

void RunAsExportChildIfAsked(const std::function<std::vector<float>()>& values) {
  if (std::getenv(kChildVariable) != nullptr) std::_Exit(ExportAndWait(values()));
}

ExportChild::~ExportChild() {
  if (stdin_fd >= 0) close(stdin_fd);
  if (pid > 0) waitpid(pid, nullptr, 0);
}

absl::StatusOr<std::unique_ptr<ExportChild>> StartExportChild() {
  int to_child[2], from_child[2];
  if (pipe(to_child) != 0) return absl::InternalError("pipe");
  if (pipe(from_child) != 0) {
    close(to_child[0]);
    close(to_child[1]);
    return absl::InternalError("pipe");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, to_child[0], 0);
  posix_spawn_file_actions_adddup2(&actions, from_child[1], 1);
  posix_spawn_file_actions_addclose(&actions, to_child[1]);
  posix_spawn_file_actions_addclose(&actions, from_child[0]);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.push_back(*e);
  env_strings.push_back(absl::StrCat(kChildVariable, "=1"));
  std::vector<char*> env;
  for (std::string& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  char self[] = "/proc/self/exe";
  char* argv[] = {self, nullptr};
  auto child = std::make_unique<ExportChild>();
  const int spawned = posix_spawn(&child->pid, self, &actions, nullptr, argv, env.data());
  posix_spawn_file_actions_destroy(&actions);
  close(to_child[0]);
  close(from_child[1]);
  if (spawned != 0) {
    child->pid = 0;
    close(to_child[1]);
    close(from_child[0]);
    return absl::InternalError("posix_spawn of the export child failed");
  }
  child->stdin_fd = to_child[1];
  std::string line;
  char c;
  while (read(from_child[0], &c, 1) == 1 && c != '\n') line.push_back(c);
  close(from_child[0]);
  const std::vector<std::string> fields = absl::StrSplit(line, ' ');
  if (fields.size() != 6 || fields[0] != "ok" || !absl::SimpleAtoi(fields[3], &child->bytes)) {
    return absl::UnavailableError(absl::StrCat("the export child said: ", line));
  }
  child->memory_handle = absl::HexStringToBytes(fields[1]);
  child->event_handle = absl::HexStringToBytes(fields[2]);
  child->device = {fields[4], fields[5]};
  return child;
}

}  // namespace a2sf::cuda_ipc
