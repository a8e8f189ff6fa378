#include "common/peer_strings.h"

#include <set>

#include "common/utf8.h"
#include "gtest/gtest.h"

namespace a2sf {
namespace {

TEST(RandomHexSecretTest, Gives32HexDigitsThatDoNotRepeat) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string s = RandomHexSecret();
    ASSERT_EQ(s.size(), 32u);
    ASSERT_EQ(s.find_first_not_of("0123456789abcdef"), std::string::npos) << s;
    seen.insert(s);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(ConstantTimeEqualsTest, ComparesContentsAndLengths) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
}

TEST(Utf8PrefixTest, NeverCutsACharacter) {
  const std::string euro = "\xE2\x82\xAC";  // U+20AC, 3 bytes
  const std::string text = "ab" + euro + euro;  // 8 bytes
  EXPECT_EQ(Utf8Prefix(text, 100), text);
  EXPECT_EQ(Utf8Prefix(text, 8), text);
  EXPECT_EQ(Utf8Prefix(text, 7), "ab" + euro);
  EXPECT_EQ(Utf8Prefix(text, 5), "ab" + euro);
  EXPECT_EQ(Utf8Prefix(text, 4), "ab");
  EXPECT_EQ(Utf8Prefix(text, 2), "ab");
  EXPECT_EQ(Utf8Prefix(text, 0), "");
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, 4 bytes
  EXPECT_EQ(Utf8Prefix(emoji + emoji, 7), emoji);
}

// A peer's code outside absl's range (or 0, "no error", sent as an error) is UNKNOWN; its message
// is kept but cut to 1024 bytes without splitting a character.
TEST(PeerErrorTest, UnknownCodesAndLongMessagesAreTamed) {
  EXPECT_EQ(PeerError(5, "gone").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(PeerError(5, "gone").message(), "gone");
  EXPECT_EQ(PeerError(16, "").code(), absl::StatusCode::kUnauthenticated);
  for (int64_t code : {int64_t{0}, int64_t{17}, int64_t{-3}, int64_t{1} << 40}) {
    EXPECT_EQ(PeerError(code, "x").code(), absl::StatusCode::kUnknown) << code;
  }
  const std::string euro = "\xE2\x82\xAC";
  std::string long_message(1023, 'a');
  long_message += euro;  // straddles byte 1024
  EXPECT_EQ(PeerError(3, long_message).message(), std::string(1023, 'a'));
}

// Raw bytes from a ring slot or a hand-off reply may be anything: what comes out is valid UTF-8 (it
// goes on into proto3 strings) and still shows the bytes.
TEST(PeerErrorTest, BytesThatAreNotUtf8AreEscaped) {
  const absl::Status status = PeerError(9, "bad \xff\xfe slot");
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsValidUtf8(status.message())) << status.message();
  EXPECT_EQ(status.message(), "bad \\xff\\xfe slot");
  const std::string euro = "\xE2\x82\xAC";
  EXPECT_EQ(PeerError(9, euro).message(), euro);  // valid UTF-8 is kept as it is
  EXPECT_TRUE(IsValidUtf8(PeerError(9, std::string(2000, '\xC3')).message()));
  EXPECT_LE(PeerError(9, std::string(2000, '\xC3')).message().size(), 1024u);
}

}  // namespace
}  // namespace a2sf
