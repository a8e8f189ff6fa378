#include "worker/service/job_credentials.h"

#include "common/grpc/bearer_token.h"
#include "common/peer_strings.h"

namespace a2sf::worker {

std::string NewJobToken() { return RandomHexSecret(16); }

bool CallerIsAdmin(const grpc::ServerContext* context, const std::string& admin_token) {
  if (admin_token.empty() || context == nullptr) return false;
  return CheckBearerToken(*context, admin_token) == BearerToken::kMatches;
}

bool MayAccessJob(const grpc::ServerContext* context, const std::string& admin_token, absl::string_view job_token,
                  absl::string_view presented) {
  return (!presented.empty() && ConstantTimeEquals(presented, job_token)) || CallerIsAdmin(context, admin_token);
}

}  // namespace a2sf::worker
