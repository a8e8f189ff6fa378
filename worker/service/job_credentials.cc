#include "worker/service/job_credentials.h"

#include "absl/strings/str_cat.h"
#include "common/peer_strings.h"

namespace a2sf::worker {

std::string NewJobToken() { return RandomHexSecret(16); }

bool CallerIsAdmin(const grpc::ServerContext* context, const std::string& admin_token) {
  if (admin_token.empty() || context == nullptr) return false;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return false;
  return ConstantTimeEquals(absl::string_view(it->second.data(), it->second.size()), absl::StrCat("Bearer ", admin_token));
}

bool MayAccessJob(const grpc::ServerContext* context, const std::string& admin_token, absl::string_view job_token,
                  absl::string_view presented) {
  return (!presented.empty() && ConstantTimeEquals(presented, job_token)) || CallerIsAdmin(context, admin_token);
}

}  // namespace a2sf::worker
