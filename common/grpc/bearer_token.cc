#include "common/grpc/bearer_token.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/peer_strings.h"

namespace a2sf {

BearerToken CheckBearerToken(const grpc::ServerContext& context, const std::string& token) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return BearerToken::kMissing;
  return ConstantTimeEquals(absl::string_view(it->second.data(), it->second.size()), absl::StrCat("Bearer ", token))
             ? BearerToken::kMatches
             : BearerToken::kWrong;
}

}  // namespace a2sf
