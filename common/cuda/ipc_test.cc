// The CUDA IPC wrapper: without a GPU every call answers UNAVAILABLE with the reason; with one, a
// child process exports a device buffer and this process opens it and reads the child's values.
#include "common/cuda/ipc.h"

#include <signal.h>

#include <string>
#include <vector>

#include "common/cuda/device.h"
#include "common/cuda/ipc_child.h"
#include "gtest/gtest.h"

namespace a2sf::cuda_ipc {
namespace {

constexpr size_t kValues = 4096;

float Pattern(size_t i) { return float(i % 97) * 0.25f + 1.0f; }

const int kChildExit = [] {
  RunAsExportChildIfAsked([] {
    std::vector<float> values(kValues);
    for (size_t i = 0; i < kValues; ++i) values[i] = Pattern(i);
    return values;
  });
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

TEST(CudaIpc, AChildExportsADeviceBufferAndThisProcessReadsIt) {
  absl::StatusOr<int> count = CudaDeviceCount();
  if (!count.ok()) GTEST_SKIP() << "skipping the two-process GPU test: " << count.status().message();
  absl::StatusOr<std::unique_ptr<ExportChild>> child = StartExportChild();
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ((*child)->bytes, kValues * 4);
  absl::StatusOr<DeviceId> here = CurrentDevice();
  ASSERT_TRUE(here.ok()) << here.status();
  EXPECT_EQ((*child)->device.uuid, here->uuid);
  const std::string memory = (*child)->memory_handle, event = (*child)->event_handle;
  {
    absl::StatusOr<std::unique_ptr<ImportedDeviceBuffer>> imported =
        ImportedDeviceBuffer::Open(memory, event, kValues * 4);
    ASSERT_TRUE(imported.ok()) << imported.status();
    std::vector<float> values(kValues);
    ASSERT_TRUE(CopyToHost(values.data(), (*imported)->device_pointer(), kValues * 4).ok());
    for (size_t i = 0; i < kValues; ++i) ASSERT_EQ(values[i], Pattern(i)) << i;
  }
  // An offer that claims more than the allocation holds is refused, not read past.
  absl::StatusOr<std::unique_ptr<ImportedDeviceBuffer>> too_big =
      ImportedDeviceBuffer::Open(memory, event, kValues * 4 + (size_t{1} << 30));
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument) << too_big.status();
  // The child keeps its buffer until it is told to go (here), then exits cleanly.
  const pid_t pid = (*child)->pid;
  child->reset();
  EXPECT_NE(kill(pid, 0), 0);
}

}  // namespace
}  // namespace a2sf::cuda_ipc
