#include "common/log.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace a2sf {
namespace {

TEST(EscapeLogText, PlainTextAndUtf8AreUnchanged) {
  EXPECT_EQ(EscapeLogText("job worker-7: 16 tokens, \"quoted\" \\ back"), "job worker-7: 16 tokens, \"quoted\" \\ back");
  EXPECT_EQ(EscapeLogText("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x99\x82 \xE2\x80\x94"), "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x99\x82 \xE2\x80\x94");
}

TEST(EscapeLogText, ALineBreakContinuesTheEntryIndented) {
  EXPECT_EQ(EscapeLogText("x\nE 2026-12-02T16:40:00.000Z auth.cc:42] FORGED"),
            "x\n    E 2026-12-02T16:40:00.000Z auth.cc:42] FORGED");
}

TEST(EscapeLogText, ControlsAndLayoutCharactersAreEscaped) {
  EXPECT_EQ(EscapeLogText("a\rb\x1b[2J\t\x7f"), "a\\x0db\\x1b[2J\\x09\\x7f");
  EXPECT_EQ(EscapeLogText(std::string("nul\0!", 5)), "nul\\x00!");
  EXPECT_EQ(EscapeLogText("next\xC2\x85line"), "next\\u0085line");                  // C1 NEXT LINE
  EXPECT_EQ(EscapeLogText("\xE2\x80\xAEreversed"), "\\u202ereversed");               // RIGHT-TO-LEFT OVERRIDE
  EXPECT_EQ(EscapeLogText("\xE2\x80\xA8|\xE2\x81\xA6|\xE2\x80\x8F|\xD8\x9C"), "\\u2028|\\u2066|\\u200f|\\u061c");
  // Bytes that are not UTF-8 -- cut sequences (not read past the end), lone continuation bytes such as
  // 0x9B (an 8-bit terminal's CSI), overlong forms -- are escaped byte by byte.
  EXPECT_EQ(EscapeLogText("\xE2\x80"), "\\xe2\\x80");
  EXPECT_EQ(EscapeLogText("\xC2"), "\\xc2");
  EXPECT_EQ(EscapeLogText("a\x9B" "2Jb"), "a\\x9b2Jb");
  EXPECT_EQ(EscapeLogText("\xC0\x8A"), "\\xc0\\x8a");  // an overlong line feed
  EXPECT_EQ(EscapeLogText("\xED\xA0\x80"), "\\xed\\xa0\\x80");  // a surrogate
}

// What a peer's string inside a message does to the log: one entry, its header first, never a second
// line that starts like an entry.
TEST(Log, APeersLineBreakCannotForgeAnEntry) {
  char path[] = "/tmp/a2sf-log-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  std::fflush(stderr);
  const int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  A2SF_LOG(WARNING) << "unknown policy 'x\nE 2026-12-02T16:40:00.000Z auth.cc:42] FORGED\x1b[2J'";
  std::fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  unlink(path);
  const std::string log = text.str();
  EXPECT_EQ(log.rfind("W ", 0), 0u) << log;
  EXPECT_EQ(log.find("\nE "), std::string::npos) << log;
  EXPECT_NE(log.find("\n    E 2026-12-02T16:40:00.000Z auth.cc:42] FORGED\\x1b[2J'\n"), std::string::npos) << log;
}

}  // namespace
}  // namespace a2sf
