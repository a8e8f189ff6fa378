#include "worker/tokenizer/tokenizer.h"

#include <cstdlib>
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/sentencepiece_model.h"
#include "worker/testing/fixtures.h"

namespace a2sf::worker {
namespace {

using testing::FixturesDir;

nlohmann::json Goldens() {
  std::ifstream in(FixturesDir() + "/golden_greedy.json");
  return nlohmann::json::parse(in);
}

std::string DecodeAll(const Tokenizer& tokenizer, const std::vector<int>& ids) {
  std::string text;
  for (size_t i = 1; i < ids.size(); ++i) text += tokenizer.DecodePiece(ids[i - 1], ids[i]);
  return text;
}

TEST(Llama2cTokenizer, EncodingsEqualTheGoldenPromptIds) {
  A2SF_REQUIRE_FIXTURES();
  auto tokenizer = LoadLlama2cTokenizer(FixturesDir() + "/tok512.bin", 512);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const nlohmann::json goldens = Goldens();
  for (const auto& prompt : goldens["prompts"]) {
    auto ids = (*tokenizer)->Encode(prompt["prompt"].get<std::string>(), true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, prompt["prompt_ids"].get<std::vector<int>>()) << prompt["prompt"];
  }
  EXPECT_EQ(*(*tokenizer)->Encode("", true), std::vector<int>{1});
}

TEST(Llama2cTokenizer, DecodingTheGoldenIdsGivesRunCsText) {
  A2SF_REQUIRE_FIXTURES();
  auto tokenizer = *LoadLlama2cTokenizer(FixturesDir() + "/tok512.bin", 512);
  const nlohmann::json goldens = Goldens();
  // run.c prints a newline at the end.
  EXPECT_EQ(DecodeAll(*tokenizer, goldens["bos_only"]["ids"].get<std::vector<int>>()) + "\n",
            goldens["bos_only"]["text"].get<std::string>());
  for (const auto& prompt : goldens["prompts"]) {
    EXPECT_EQ(DecodeAll(*tokenizer, prompt["ids"].get<std::vector<int>>()) + "\n", prompt["text"].get<std::string>());
  }
}

TEST(Llama2cTokenizer, RoundTripsTextIncludingBytesOutsideTheVocabulary) {
  A2SF_REQUIRE_FIXTURES();
  auto tokenizer = *LoadLlama2cTokenizer(FixturesDir() + "/tok512.bin", 512);
  for (const std::string text : {"Once upon a time, Lily saw a dog.", "naïve café — 日本 🙂", "a\tb\nc"}) {
    auto ids = tokenizer->Encode(text, true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(DecodeAll(*tokenizer, *ids), text);
  }
}

TEST(Llama2cTokenizer, BadInputs) {
  A2SF_REQUIRE_FIXTURES();
  auto tokenizer = *LoadLlama2cTokenizer(FixturesDir() + "/tok512.bin", 512);
  EXPECT_EQ(tokenizer->Encode("bad \xff byte", true).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tokenizer->Encode("overlong \xC0\xAF", true).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tokenizer->DecodePiece(1, 100000), "");
  EXPECT_EQ(LoadLlama2cTokenizer(FixturesDir() + "/tok512.bin", 1000).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadLlama2cTokenizer("/nonexistent/tok.bin", 0).status().code(), absl::StatusCode::kNotFound);
  // A model file is not a tokenizer.
  EXPECT_FALSE(LoadLlama2cTokenizer(FixturesDir() + "/stories260K-hf/config.json", 0).ok());
}

TEST(Utf8StreamDecoder, NeverSplitsACharacter) {
  Utf8StreamDecoder decoder;
  const std::string text = "é日🙂";  // 2, 3 and 4 bytes
  std::string out;
  for (char c : text) {
    const std::string piece = decoder.Push(std::string(1, c));
    EXPECT_TRUE(IsValidUtf8(piece));
    out += piece;
  }
  out += decoder.Flush();
  EXPECT_EQ(out, text);
  EXPECT_EQ(decoder.Push("a\xff" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(decoder.Push("\xE6\x97"), "");
  EXPECT_EQ(decoder.Flush(), "\xEF\xBF\xBD");
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));   // U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xE6\x97"));          // cut short
}

TEST(SentencePieceTokenizer, TrainedAtTestTimeRoundTripsText) {
  A2SF_REQUIRE_FIXTURES();
  const std::string dir = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  {
    std::ifstream corpus(FixturesDir() + "/corpus_t1_p09_seeds1-20.jsonl");
    std::ofstream text(dir + "/corpus.txt");
    std::string line;
    while (std::getline(corpus, line)) text << nlohmann::json::parse(line)["text"].get<std::string>() << "\n";
  }
  const std::string error = TrainSentencePieceModel(
      "--input=" + dir + "/corpus.txt --model_prefix=" + dir +
      "/sp --vocab_size=600 --model_type=bpe --byte_fallback=true --minloglevel=2");
  ASSERT_EQ(error, "");
  auto tokenizer = LoadTokenizer(dir + "/sp.model");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 600);
  for (const std::string text : {"Once upon a time, there was a little girl.", "Tom said: \"hi\" 日本"}) {
    auto ids = (*tokenizer)->Encode(text, true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(ids->front(), (*tokenizer)->bos_id());
    EXPECT_EQ(DecodeAll(**tokenizer, *ids), text);
  }
  EXPECT_EQ(LoadTokenizer(dir + "/corpus.txt.model").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace a2sf::worker
