#include "common/cuda/ipc.h"

#include "absl/strings/str_cat.h"
#include "common/cuda/ipc_runtime.h"

namespace a2sf::cuda_ipc {

namespace rt = cuda_ipc_runtime;

namespace {

absl::Status Unavailable(absl::string_view what, const std::string& error) {
  return absl::UnavailableError(absl::StrCat("CUDA IPC: ", what, ": ", error));
}

absl::Status CheckHandle(absl::string_view name, absl::string_view handle) {
  if (handle.size() == rt::kHandleBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": a CUDA IPC handle has ", rt::kHandleBytes, " bytes, got ", handle.size()));
}

}  // namespace

absl::StatusOr<DeviceId> CurrentDevice() {
  DeviceId id;
  std::string error;
  if (rt::CurrentDevice(&id.uuid, &id.pci_bus_id, &error) != 0) return Unavailable("no device", error);
  return id;
}

absl::StatusOr<std::unique_ptr<ExportedDeviceBuffer>> ExportedDeviceBuffer::Create(size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("CUDA IPC: an exported buffer needs at least one byte");
  std::unique_ptr<ExportedDeviceBuffer> buffer(new ExportedDeviceBuffer());
  absl::StatusOr<DeviceId> device = CurrentDevice();
  if (!device.ok()) return device.status();
  buffer->device_ = *device;
  std::string error;
  if (rt::Allocate(bytes, &buffer->pointer_, &error) != 0) return Unavailable("allocation", error);
  buffer->bytes_ = bytes;
  if (rt::CreateEvent(&buffer->event_, &error) != 0) return Unavailable("interprocess event", error);
  buffer->memory_handle_.resize(rt::kHandleBytes);
  buffer->event_handle_.resize(rt::kHandleBytes);
  if (rt::ExportMemory(buffer->pointer_, buffer->memory_handle_.data(), &error) != 0) {
    return Unavailable("cudaIpcGetMemHandle", error);
  }
  if (rt::ExportEvent(buffer->event_, buffer->event_handle_.data(), &error) != 0) {
    return Unavailable("cudaIpcGetEventHandle", error);
  }
  return buffer;
}

ExportedDeviceBuffer::~ExportedDeviceBuffer() {
  rt::DestroyEvent(event_);
  rt::Free(pointer_);
}

absl::StatusOr<std::unique_ptr<ImportedDeviceBuffer>> ImportedDeviceBuffer::Open(absl::string_view memory_handle,
                                                                               absl::string_view event_handle,
                                                                               size_t bytes) {
  if (absl::Status s = CheckHandle("memory_handle", memory_handle); !s.ok()) return s;
  if (absl::Status s = CheckHandle("event_handle", event_handle); !s.ok()) return s;
  std::unique_ptr<ImportedDeviceBuffer> buffer(new ImportedDeviceBuffer());
  std::string error;
  size_t allocation_bytes = 0;
  if (rt::OpenMemory(memory_handle.data(), &buffer->pointer_, &allocation_bytes, &error) != 0) {
    return Unavailable("cudaIpcOpenMemHandle", error);
  }
  if (allocation_bytes < bytes) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA IPC: the offer claims ", bytes,
                                                   " bytes, the allocation behind its handle has ", allocation_bytes));
  }
  buffer->bytes_ = bytes;
  if (rt::OpenEvent(event_handle.data(), &buffer->event_, &error) != 0) {
    return Unavailable("cudaIpcOpenEventHandle", error);
  }
  return buffer;
}

ImportedDeviceBuffer::~ImportedDeviceBuffer() {
  rt::DestroyEvent(event_);
  rt::CloseMemory(pointer_);
}

absl::Status CopyToDevice(void* device, const void* host, size_t bytes) {
  std::string error;
  return rt::CopyToDevice(device, host, bytes, &error) == 0 ? absl::OkStatus() : Unavailable("copy", error);
}

absl::Status CopyToHost(void* host, const void* device, size_t bytes) {
  std::string error;
  return rt::CopyToHost(host, device, bytes, &error) == 0 ? absl::OkStatus() : Unavailable("copy", error);
}

absl::Status RecordEvent(void* event) {
  std::string error;
  return rt::RecordEvent(event, &error) == 0 ? absl::OkStatus() : Unavailable("event record", error);
}

}  // namespace a2sf::cuda_ipc
