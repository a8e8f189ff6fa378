// ToGrpc keeps a status's code and message, and cuts a message longer than kMaxStatusMessageBytes on a
// UTF-8 character boundary, saying how much it cut; FromGrpc gives code and message back.
#include "common/grpc/status.h"

#include <string>

#include "common/utf8.h"
#include "gtest/gtest.h"

namespace a2sf {
namespace {

TEST(GrpcStatus, CodesAndShortMessagesCrossUnchanged) {
  EXPECT_TRUE(ToGrpc(absl::OkStatus()).ok());
  const grpc::Status sent = ToGrpc(absl::NotFoundError("no session 's-1'"));
  EXPECT_EQ(sent.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(sent.error_message(), "no session 's-1'");
  EXPECT_EQ(FromGrpc(sent), absl::NotFoundError("no session 's-1'"));
  const std::string exactly(kMaxStatusMessageBytes, 'x');
  EXPECT_EQ(ToGrpc(absl::InvalidArgumentError(exactly)).error_message(), exactly);
}

TEST(GrpcStatus, AnOversizedMessageIsCutOnACharacterBoundaryAndSaysSo) {
  // A message that echoes a 100 KB name of two-byte characters (an odd cut would split one).
  std::string name;
  for (int i = 0; i < 50000; ++i) name += "\xC3\xA9";  // U+00E9
  const std::string message = "unknown policy '" + name + "'";
  const grpc::Status sent = ToGrpc(absl::InvalidArgumentError(message));
  EXPECT_EQ(sent.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const std::string& cut = sent.error_message();
  EXPECT_LE(cut.size(), kMaxStatusMessageBytes);
  EXPECT_TRUE(IsValidUtf8(cut));
  EXPECT_EQ(cut.rfind("unknown policy '\xC3\xA9", 0), 0u) << "the message's start is kept";
  const size_t kept = cut.find(" [... ");
  ASSERT_NE(kept, std::string::npos) << cut;
  EXPECT_EQ(cut.substr(kept), " [... " + std::to_string(message.size() - kept) + " more bytes cut]");
}

}  // namespace
}  // namespace a2sf
