// CUDA IPC: a device buffer and an "it is written" event that one process exports and another opens,
// so that a co-located worker and cache manager can share a step's scores on the GPU without copying
// them through the host (docs/GPU.md, "Device-resident hand-off").
//
// ExportedDeviceBuffer is the exporting side: it allocates the buffer (an allocation of its own, so its
// handle covers exactly it) and an event created with cudaEventInterprocess | cudaEventDisableTiming,
// and holds their 64-byte handles. ImportedDeviceBuffer is the opening side: it opens both handles and
// checks that the allocation behind the memory handle really has the bytes the offer claims (a peer
// cannot make it read past an allocation). Each frees or closes what it holds when destroyed; the
// exporter must outlive every importer's use (the protocol closes the session first).
//
// Errors: UNAVAILABLE, with the CUDA error's name and text, when the binary has no CUDA, there is no
// GPU, or a handle cannot be opened here (a device this process cannot reach, a process without the
// right to open it); INVALID_ARGUMENT for a handle that is not 64 bytes or an
// allocation smaller than claimed. Thread-safety: instances are immutable after creation.
#ifndef A2SF_COMMON_CUDA_IPC_H_
#define A2SF_COMMON_CUDA_IPC_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace a2sf::cuda_ipc {

// Which GPU this process uses (the current device): its UUID (32 hex digits) and PCI bus id.
struct DeviceId {
  std::string uuid;
  std::string pci_bus_id;
};
absl::StatusOr<DeviceId> CurrentDevice();

class ExportedDeviceBuffer {
 public:
  static absl::StatusOr<std::unique_ptr<ExportedDeviceBuffer>> Create(size_t bytes);
  ~ExportedDeviceBuffer();
  ExportedDeviceBuffer(const ExportedDeviceBuffer&) = delete;
  ExportedDeviceBuffer& operator=(const ExportedDeviceBuffer&) = delete;

  void* device_pointer() const { return pointer_; }
  size_t bytes() const { return bytes_; }
  void* event() const { return event_; }  // a cudaEvent_t
  const std::string& memory_handle() const { return memory_handle_; }
  const std::string& event_handle() const { return event_handle_; }
  const DeviceId& device() const { return device_; }

 private:
  ExportedDeviceBuffer() = default;
  void* pointer_ = nullptr;
  size_t bytes_ = 0;
  void* event_ = nullptr;
  std::string memory_handle_, event_handle_;
  DeviceId device_;
};

class ImportedDeviceBuffer {
 public:
  // Opens a peer's buffer of (at least) `bytes` and its event.
  static absl::StatusOr<std::unique_ptr<ImportedDeviceBuffer>> Open(absl::string_view memory_handle,
                                                                    absl::string_view event_handle, size_t bytes);
  ~ImportedDeviceBuffer();
  ImportedDeviceBuffer(const ImportedDeviceBuffer&) = delete;
  ImportedDeviceBuffer& operator=(const ImportedDeviceBuffer&) = delete;

  const void* device_pointer() const { return pointer_; }
  size_t bytes() const { return bytes_; }
  void* event() const { return event_; }  // a cudaEvent_t: wait on it before reading

 private:
  ImportedDeviceBuffer() = default;
  void* pointer_ = nullptr;
  size_t bytes_ = 0;
  void* event_ = nullptr;
};

// Synchronous copies between host memory and a device buffer, and an event record (tests, bench).
absl::Status CopyToDevice(void* device, const void* host, size_t bytes);
absl::Status CopyToHost(void* host, const void* device, size_t bytes);
absl::Status RecordEvent(void* event);

}  // namespace a2sf::cuda_ipc

#endif  // A2SF_COMMON_CUDA_IPC_H_
