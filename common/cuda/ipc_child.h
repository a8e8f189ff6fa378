// A second process for tests and benchmarks of CUDA IPC (a handle is opened by another process than
// the one that exported it): this same binary, re-run with an environment variable set, exports a
// device buffer holding given values and keeps it until its parent is done with it.
//
// Call RunAsExportChildIfAsked first thing (main, or a static initializer in a test); in the parent,
// StartExportChild spawns the child and reads what it exported. Not thread-safe.
#ifndef A2SF_COMMON_CUDA_IPC_CHILD_H_
#define A2SF_COMMON_CUDA_IPC_CHILD_H_

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cuda/ipc.h"

namespace a2sf::cuda_ipc {

// In the child (the variable is set): exports `values()` in an ExportedDeviceBuffer, records its
// event, prints the handles and waits for stdin to close, then exits. Otherwise returns at once.
void RunAsExportChildIfAsked(const std::function<std::vector<float>()>& values);

// The parent's view of a running child; destroying it closes the child's stdin and reaps it.
struct ExportChild {
  pid_t pid = 0;
  int stdin_fd = -1;
  std::string memory_handle, event_handle;
  size_t bytes = 0;
  DeviceId device;
  ~ExportChild();
};

// Spawns this binary as an export child; UNAVAILABLE with what the child said when it could not export.
absl::StatusOr<std::unique_ptr<ExportChild>> StartExportChild();

}  // namespace a2sf::cuda_ipc

#endif  // A2SF_COMMON_CUDA_IPC_CHILD_H_
