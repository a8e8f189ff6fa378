#include "worker/tokenizer/tokenizer.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/model/gguf.h"
#include "worker/tokenizer/sentencepiece_model.h"
#include "worker/tokenizer/testing/reference_bpe.h"
#include "worker/tokenizer/vocabulary.h"
#include "worker/testing/fixtures.h"
#include "worker/testing/goldens.h"

namespace a2sf::worker {
namespace {

using testing::FixturesDir;
using testing::GoldenLogits;
using testing::Goldens;


std::string TempDir() { return std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp"; }

struct Story {
  std::string text;
  std::vector<int> ids;
};
// The fixture corpus: run.c's text and the ids it sampled (the final BOS, where it stopped, dropped).
std::vector<Story> CorpusStories() {
  std::vector<Story> stories;
  std::ifstream in(FixturesDir() + "/corpus_t1_p09_seeds1-20.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    Story s{j["text"].get<std::string>(), j["ids"].get<std::vector<int>>()};
    if (j["stopped_at_bos"].get<bool>()) s.ids.pop_back();
    stories.push_back(std::move(s));
  }
  return stories;
}

// Writes `vocabulary` as the tokenizer of an otherwise empty GGUF file.
std::string WriteGgufVocabulary(const Vocabulary& vocabulary, const std::string& name) {
  gguf::GgufWriter writer;
  writer.Set("general.architecture", gguf::Value::String("llama"));
  AddVocabularyToGguf(vocabulary, &writer);
  const std::string path = TempDir() + "/" + name;
  EXPECT_TRUE(writer.Write(path).ok());
  return path;
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

// A prompt of 32 KB (the most the worker takes for a 512-token context) of the corpus's text, and
// one of 32 KB of one word repeated (thousands of equal candidates at each merge: the leftmost rule
// decides), round-trip.
TEST(Llama2cTokenizer, LongPromptsRoundTrip) {
  A2SF_REQUIRE_FIXTURES();
  auto tokenizer = *LoadLlama2cTokenizer(FixturesDir() + "/tok512.bin", 512);
  std::string stories;
  while (stories.size() < (size_t(32) << 10)) {
    for (const Story& s : CorpusStories()) stories += s.text + "\n";
  }
  // The first 4 KB merge exactly as the plain loop merges them over tok512's own vocabulary (the
  // 32 KB would take it seconds).
  auto vocabulary = ReadVocabulary(FixturesDir() + "/tok512.bin", 512);
  ASSERT_TRUE(vocabulary.ok()) << vocabulary.status();
  const std::string head = stories.substr(0, size_t(4) << 10);
  EXPECT_EQ(*tokenizer->Encode(head, false), testing::ReferenceEncode(*vocabulary, head));
  for (const std::string& text : {stories.substr(0, size_t(32) << 10), absl::StrJoin(std::vector<std::string>(8192, "the"), " ")}) {
    auto ids = tokenizer->Encode(text, true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_LT(ids->size(), text.size()) << "the text merged into pieces";
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

TEST(GgufTokenizer, Tok512ThroughGgufMetadataEncodesAndDecodesLikeRunC) {
  A2SF_REQUIRE_FIXTURES();
  auto vocabulary = ReadLlama2cVocabulary(FixturesDir() + "/tok512.bin", 512);
  ASSERT_TRUE(vocabulary.ok()) << vocabulary.status();
  const std::string path = WriteGgufVocabulary(*vocabulary, "tok512.gguf");
  auto tokenizer = LoadTokenizer(path);  // by the GGUF magic, not the name
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 512);
  EXPECT_EQ((*tokenizer)->bos_id(), 1);
  EXPECT_EQ((*tokenizer)->eos_id(), 2);
  const nlohmann::json goldens = Goldens();
  for (const auto& prompt : goldens["prompts"]) {
    EXPECT_EQ(*(*tokenizer)->Encode(prompt["prompt"].get<std::string>(), true),
              prompt["prompt_ids"].get<std::vector<int>>());
    EXPECT_EQ(DecodeAll(**tokenizer, prompt["ids"].get<std::vector<int>>()) + "\n", prompt["text"].get<std::string>());
  }
  EXPECT_EQ(DecodeAll(**tokenizer, goldens["bos_only"]["ids"].get<std::vector<int>>()) + "\n",
            goldens["bos_only"]["text"].get<std::string>());
  // Every corpus story: run.c's sampled ids decode to run.c's text, and encoding the text gives ids
  // that decode back to it.
  const std::vector<Story> stories = CorpusStories();
  ASSERT_EQ(stories.size(), 20u);
  for (const Story& story : stories) {
    EXPECT_EQ(DecodeAll(**tokenizer, story.ids), story.text);
    auto ids = (*tokenizer)->Encode(story.text, true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(DecodeAll(**tokenizer, *ids), story.text);
    EXPECT_LE(ids->size(), story.ids.size());  // merging never does worse than a sampled segmentation
  }
}

TEST(GgufTokenizer, AddBosTokenFalseIsHonoured) {
  A2SF_REQUIRE_FIXTURES();
  auto vocabulary = *ReadLlama2cVocabulary(FixturesDir() + "/tok512.bin", 512);
  vocabulary.add_bos = false;
  auto tokenizer = LoadTokenizer(WriteGgufVocabulary(vocabulary, "nobos.gguf"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(*(*tokenizer)->Encode("Once upon a time", true), (std::vector<int>{403, 407, 261, 378}));
}

TEST(GgufTokenizer, MalformedTokenizerMetadataIsRefusedByName) {
  A2SF_REQUIRE_FIXTURES();
  const Vocabulary good = *ReadLlama2cVocabulary(FixturesDir() + "/tok512.bin", 512);
  auto load = [&](const std::function<void(gguf::GgufWriter*)>& tweak) {
    gguf::GgufWriter writer;
    AddVocabularyToGguf(good, &writer);
    tweak(&writer);
    const std::string path = TempDir() + "/badtok.gguf";
    EXPECT_TRUE(writer.Write(path).ok());
    return LoadTokenizer(path).status();
  };
  auto expect = [](const absl::Status& s, absl::StatusCode code, const std::string& words) {
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_NE(s.message().find(words), std::string::npos) << s;
  };
  expect(load([](gguf::GgufWriter* w) { w->Set("tokenizer.ggml.model", gguf::Value::String("gpt2")); }),
         absl::StatusCode::kInvalidArgument, "'gpt2'");
  expect(load([](gguf::GgufWriter* w) {
           w->Set("tokenizer.ggml.scores", gguf::Value::Array(gguf::ValueType::kFloat32, {gguf::Value::Float32(0)}));
         }),
         absl::StatusCode::kInvalidArgument, "1 scores");
  expect(load([](gguf::GgufWriter* w) { w->Set("tokenizer.ggml.bos_token_id", gguf::Value::Uint32(512)); }),
         absl::StatusCode::kInvalidArgument, "bos id 512");
  expect(load([](gguf::GgufWriter* w) { w->Set("tokenizer.ggml.tokens", gguf::Value::String("x")); }),
         absl::StatusCode::kInvalidArgument, "tokenizer.ggml.tokens");
  expect(load([](gguf::GgufWriter* w) {
           std::vector<gguf::Value> types(512, gguf::Value::Int32(1));
           types[7] = gguf::Value::Int32(42);
           w->Set("tokenizer.ggml.token_type", gguf::Value::Array(gguf::ValueType::kInt32, types));
         }),
         absl::StatusCode::kInvalidArgument, "unknown type 42");
  // A GGUF file without a tokenizer.
  gguf::GgufWriter bare;
  bare.Set("general.architecture", gguf::Value::String("llama"));
  ASSERT_TRUE(bare.Write(TempDir() + "/bare.gguf").ok());
  expect(LoadTokenizer(TempDir() + "/bare.gguf").status(), absl::StatusCode::kNotFound, "tokenizer.ggml.model");
  auto bare_model = LoadTokenizerForModel(TempDir() + "/bare.gguf", "");  // a model without one: none
  ASSERT_TRUE(bare_model.ok()) << bare_model.status();
  EXPECT_EQ(*bare_model, nullptr);
  // No tokenizer flag and no tokenizer in the model: none, and no error.
  auto none = LoadTokenizerForModel(FixturesDir() + "/stories260K-dq.bin", "");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
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

// A vocabulary whose merged pieces share three scores (so the leftmost rule decides between
// different pieces at every turn, as in GGUF files whose scores are all 0), on 3000 random texts.
TEST(VocabularyTokenizer, HeapMergesEqualThePlainLoopIncludingTies) {
  std::mt19937 random(5);
  Vocabulary v;
  auto add = [&](std::string piece, float score, TokenType type) {
    v.pieces.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<unk>", 0, TokenType::kUnknown);
  add("<s>", 0, TokenType::kControl);
  add("</s>", 0, TokenType::kControl);
  for (int b = 0; b < 256; ++b) add(absl::StrFormat("<0x%02X>", b), 0, TokenType::kByte);
  const std::vector<std::string> alphabet = {"a", "b", "c", "\xE2\x96\x81"};
  for (const std::string& c : alphabet) add(c, 0, TokenType::kNormal);
  std::set<std::string> merged;
  while (merged.size() < 60) {
    std::string piece;
    for (int k = 2 + int(random() % 3); k > 0; --k) piece += alphabet[random() % alphabet.size()];
    merged.insert(piece);
  }
  for (const std::string& piece : merged) add(piece, float(random() % 3), TokenType::kNormal);
  auto tokenizer = MakeVocabularyTokenizer(v);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::vector<std::string> letters = {"a", "b", "c", " ", "\xC3\xA9"};  // é: bytes, never merged
  for (int t = 0; t < 3000; ++t) {
    std::string text;
    for (int k = int(random() % 40); k > 0; --k) text += letters[random() % letters.size()];
    auto ids = (*tokenizer)->Encode(text, /*add_bos=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    ASSERT_EQ(*ids, testing::ReferenceEncode(v, text)) << "'" << text << "'";
  }
  // A NaN score has no place in the merge order: refused.
  v.scores.back() = std::nanf("");
  EXPECT_EQ(MakeVocabularyTokenizer(v).status().code(), absl::StatusCode::kInvalidArgument);
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

TEST(SentencePieceTokenizer, ItsVocabularyInGgufEncodesLikeLibsentencepiece) {
  A2SF_REQUIRE_FIXTURES();
  // A model trained with LLaMA's settings: BPE, byte fallback, no normalization, spaces kept.
  const std::string dir = TempDir();
  std::vector<Story> stories = CorpusStories();
  {
    std::ofstream text(dir + "/corpus_llama.txt");
    for (const Story& s : stories) text << s.text << "\n";
  }
  const std::string error = TrainSentencePieceModel(
      "--input=" + dir + "/corpus_llama.txt --model_prefix=" + dir +
      "/spl --vocab_size=700 --model_type=bpe --byte_fallback=true --normalization_rule_name=identity "
      "--remove_extra_whitespaces=false --split_digits=true --minloglevel=2");
  ASSERT_EQ(error, "");
  auto reference = *LoadTokenizer(dir + "/spl.model");
  auto vocabulary = ReadVocabulary(dir + "/spl.model");
  ASSERT_TRUE(vocabulary.ok()) << vocabulary.status();
  auto tokenizer = LoadTokenizer(WriteGgufVocabulary(*vocabulary, "spl.gguf"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->bos_id(), reference->bos_id());
  EXPECT_EQ((*tokenizer)->eos_id(), reference->eos_id());
  stories.push_back({"Tom said: \"hi\"  twice 日本 🙂 42", {}});
  // The stories (repeated to 32 KB) as one prompt: the merges (a heap of candidate pairs) still follow
  // libsentencepiece's order exactly.
  std::string all;
  while (all.size() < (size_t(32) << 10)) {
    for (const Story& s : stories) all += s.text + " ";
  }
  stories.push_back({all, {}});
  for (const Story& s : stories) {
    const std::vector<int> want = *reference->Encode(s.text, true);
    EXPECT_EQ(*(*tokenizer)->Encode(s.text, true), want) << s.text;
    EXPECT_EQ(DecodeAll(**tokenizer, want), DecodeAll(*reference, want));
  }
}

}  // namespace
}  // namespace a2sf::worker
