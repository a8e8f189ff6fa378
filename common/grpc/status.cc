#include "common/grpc/status.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/peer_strings.h"

namespace a2sf {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const absl::string_view message = status.message();
  std::string sent;
  if (message.size() <= kMaxStatusMessageBytes) {
    sent = std::string(message);
  } else {
    const absl::string_view kept = Utf8Prefix(message, kMaxStatusMessageBytes - 64);
    sent = absl::StrCat(kept, " [... ", message.size() - kept.size(), " more bytes cut]");
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::move(sent));
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace a2sf
