// OutputText on a hand-made vocabulary: stop strings across token boundaries, both stop-string
// rules, min_tokens, stop tokens and UTF-8 characters split over tokens.
#include "worker/tokenizer/output_text.h"

#include "gtest/gtest.h"

namespace a2sf::worker {
namespace {

// Token i decodes to kPieces[i]; 1 is BOS, 2 is EOS.
const char* const kPieces[] = {"", "<s>", "</s>", "Hel", "lo wor", "ld", "!", "\xE2\x82", "\xAC", "STOP", "x\nY", "\n"};

class FakeTokenizer : public Tokenizer {
 public:
  int vocab_size() const override { return 12; }
  int bos_id() const override { return 1; }
  int eos_id() const override { return 2; }
  const char* kind() const override { return "fake"; }
  absl::StatusOr<std::vector<int>> Encode(const std::string&, bool) const override { return std::vector<int>{}; }
  std::string DecodePiece(int, int token) const override { return kPieces[token]; }
};

struct Fed {
  std::string streamed;
  std::vector<std::string> chunks;
  bool stopped = false;
  int tokens_used = 0;
};

Fed Feed(const std::vector<int>& tokens, StopStringOptions options, int stop_token = -1) {
  static const FakeTokenizer tokenizer;
  OutputText out(&tokenizer, 1, std::move(options));
  Fed run;
  for (size_t i = 0; i < tokens.size(); ++i) {
    OutputText::Update u = out.Push(tokens[i], int(i), tokens[i] == stop_token || tokens[i] == 2);
    run.chunks.push_back(u.text);
    run.streamed += u.text;
    ++run.tokens_used;
    if (u.stopped) {
      run.stopped = true;
      break;
    }
    if (tokens[i] == stop_token || tokens[i] == 2) break;
  }
  run.streamed += out.Finish();
  return run;
}

TEST(OutputText, StopStringAcrossTokensIsIncludedByDefaultAndNothingIsHeldBack) {
  Fed run = Feed({3, 4, 5, 6, 3}, {{"o world"}, true, 0});
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.tokens_used, 3);
  EXPECT_EQ(run.streamed, "Hello world");
  EXPECT_EQ(run.chunks[0], "Hel");
  EXPECT_EQ(run.chunks[1], "lo wor");  // streamed at once: an included stop string needs no hold-back
}

TEST(OutputText, ExcludedStopStringIsRemovedAndItsPrefixHeldBackUntilResolved) {
  Fed run = Feed({3, 4, 5, 6}, {{"o world"}, false, 0});
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.streamed, "Hell");
  EXPECT_EQ(run.chunks[0], "Hel");
  EXPECT_EQ(run.chunks[1], "l");  // "o wor" could begin the stop string
  // A prefix that turns out not to be one is released when resolved.
  Fed miss = Feed({3, 4, 6}, {{"o world"}, false, 0});
  EXPECT_FALSE(miss.stopped);
  EXPECT_EQ(miss.chunks[1], "l");
  EXPECT_EQ(miss.chunks[2], "o wor!");
  EXPECT_EQ(miss.streamed, "Hello wor!");
}

TEST(OutputText, TextAfterTheMatchWithinTheSameTokenIsDropped) {
  Fed included = Feed({3, 10, 3}, {{"\n"}, true, 0});
  EXPECT_TRUE(included.stopped);
  EXPECT_EQ(included.streamed, "Helx\n");
  Fed excluded = Feed({3, 10, 3}, {{"\n"}, false, 0});
  EXPECT_EQ(excluded.streamed, "Helx");
}

TEST(OutputText, TheEarliestEndingMatchWins) {
  Fed run = Feed({3, 4, 5}, {{"world", "lo"}, true, 0});
  EXPECT_EQ(run.streamed, "Hello");
  EXPECT_EQ(run.tokens_used, 2);
}

TEST(OutputText, NoMatchBeforeMinTokensButAStraddlingOneAfter) {
  // "lo" is complete at the 2nd token: with min_tokens 3 it does not count.
  Fed late = Feed({3, 4, 5, 6}, {{"lo"}, true, 3});
  EXPECT_FALSE(late.stopped);
  EXPECT_EQ(late.streamed, "Hello world!");
  // "rld" straddles tokens 2 and 3 and completes at the 3rd: it counts.
  Fed straddling = Feed({3, 4, 5, 6}, {{"rld"}, true, 3});
  EXPECT_TRUE(straddling.stopped);
  EXPECT_EQ(straddling.streamed, "Hello world");
}

TEST(OutputText, StopTokenTextFollowsTheStopStringRule) {
  EXPECT_EQ(Feed({3, 9, 3}, {{}, true, 0}, 9).streamed, "HelSTOP");
  EXPECT_EQ(Feed({3, 9, 3}, {{}, false, 0}, 9).streamed, "Hel");
  EXPECT_EQ(Feed({3, 2}, {{}, false, 0}).streamed, "Hel");  // EOS has no text
}

TEST(OutputText, MultiByteCharactersSplitOverTokensMatchOnceComplete) {
  Fed run = Feed({3, 7, 8, 6}, {{"\xE2\x82\xAC"}, false, 0});
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.tokens_used, 3);
  EXPECT_EQ(run.streamed, "Hel");
  Fed unfinished = Feed({3, 7}, {{}, true, 0});
  EXPECT_EQ(unfinished.streamed, "Hel\xEF\xBF\xBD");  // U+FFFD at the end
}

TEST(OutputText, ValidationNamesTheField) {
  EXPECT_TRUE(ValidateStopStrings({"a", "\n"}).ok());
  EXPECT_NE(ValidateStopStrings({""}).message().find("stop.stop_strings"), std::string::npos);
  EXPECT_FALSE(ValidateStopStrings({std::string(300, 'a')}).ok());
  EXPECT_FALSE(ValidateStopStrings({"\xff"}).ok());
  EXPECT_FALSE(ValidateStopStrings(std::vector<std::string>(17, "a")).ok());
}

}  // namespace
}  // namespace a2sf::worker
