#include "worker/service/job_credentials.h"

#include <sys/random.h>

#include <cstdint>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace a2sf::worker {

std::string NewJobToken() {
  char bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n > 0) got += size_t(n);  // EINTR: try again; getrandom never fails otherwise once seeded
  }
  return absl::BytesToHexString(absl::string_view(bytes, sizeof(bytes)));
}

bool SecretsEqual(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= uint8_t(a[i] ^ b[i]);
  return diff == 0;
}

bool CallerIsAdmin(const grpc::ServerContext* context, const std::string& admin_token) {
  if (admin_token.empty() || context == nullptr) return false;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return false;
  return SecretsEqual(absl::string_view(it->second.data(), it->second.size()), absl::StrCat("Bearer ", admin_token));
}

bool MayAccessJob(const grpc::ServerContext* context, const std::string& admin_token, absl::string_view job_token,
                  absl::string_view presented) {
  return (!presented.empty() && SecretsEqual(presented, job_token)) || CallerIsAdmin(context, admin_token);
}

}  // namespace a2sf::worker
