#include "worker/model/gguf_model.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>

#include "gtest/gtest.h"
#include "worker/model/gguf.h"
#include "worker/model/model_writers.h"
#include "worker/testing/fixtures.h"
#include "worker/tokenizer/vocabulary.h"

namespace a2sf::worker {
namespace {

using testing::FixturesDir;

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}
std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), data.size());
}

std::vector<float> RowsAsFloats(const WeightMatrix& m) {
  std::vector<float> out(size_t(m.rows) * m.cols);
  for (int64_t r = 0; r < m.rows; ++r) m.RowToFloat(r, &out[size_t(r) * m.cols]);
  return out;
}

// Every tensor of `a` and `b` holds the same values.
void ExpectSameWeights(const ModelWeights& a, const ModelWeights& b) {
  const ModelConfig &ca = a.config(), &cb = b.config();
  ASSERT_EQ(ca.dim, cb.dim);
  ASSERT_EQ(ca.hidden_dim, cb.hidden_dim);
  ASSERT_EQ(ca.n_layers, cb.n_layers);
  EXPECT_EQ(ca.n_heads, cb.n_heads);
  EXPECT_EQ(ca.n_kv_heads, cb.n_kv_heads);
  EXPECT_EQ(ca.vocab_size, cb.vocab_size);
  EXPECT_EQ(ca.seq_len, cb.seq_len);
  EXPECT_EQ(ca.rope_theta, cb.rope_theta);
  EXPECT_EQ(ca.norm_eps, cb.norm_eps);
  EXPECT_EQ(ca.shared_classifier, cb.shared_classifier);
  EXPECT_EQ(RowsAsFloats(a.token_embedding()), RowsAsFloats(b.token_embedding()));
  EXPECT_EQ(RowsAsFloats(a.classifier()), RowsAsFloats(b.classifier()));
  EXPECT_EQ(0, std::memcmp(a.rms_final(), b.rms_final(), ca.dim * 4));
  for (int l = 0; l < ca.n_layers; ++l) {
    for (const LayerMatrixField& f : kLayerMatrices) {
      EXPECT_EQ(RowsAsFloats(a.layer(l).*f.member), RowsAsFloats(b.layer(l).*f.member)) << l << " " << f.gguf_name;
    }
    for (const LayerNormField& f : kLayerNorms) {
      EXPECT_EQ(0, std::memcmp(a.layer(l).*f.member, b.layer(l).*f.member, ca.dim * 4)) << l << " " << f.gguf_name;
    }
  }
}

// The fixture written as GGUF in `type` (nullopt: as loaded), with tok512 as its tokenizer.
std::string FixtureAsGguf(std::optional<WeightType> type, const std::string& name,
                          std::vector<std::string>* notes = nullptr) {
  auto model = LoadModel(FixturesDir() + "/stories260K-dq.bin");
  EXPECT_TRUE(model.ok()) << model.status();
  gguf::GgufWriter writer;
  AddVocabularyToGguf(*ReadLlama2cVocabulary(FixturesDir() + "/tok512.bin", 512), &writer);
  const std::string path = TempPath(name);
  const absl::Status s = WriteGgufModel(**model, type, &writer, path, notes);
  EXPECT_TRUE(s.ok()) << s;
  return path;
}

TEST(GgufModel, Fp32RoundTripOfTheFixtureIsExact) {
  A2SF_REQUIRE_FIXTURES();
  const std::string path = FixtureAsGguf(WeightType::kF32, "f32.gguf");
  auto bin = *LoadModel(FixturesDir() + "/stories260K-dq.bin");
  LoadOptions in_place;
  in_place.panels = false;  // as the file holds them
  auto gguf_model = LoadModel(path, in_place);  // LoadModel recognises the magic
  ASSERT_TRUE(gguf_model.ok()) << gguf_model.status();
  ExpectSameWeights(*bin, **gguf_model);
  EXPECT_NE((*gguf_model)->format().find("GGUF v3 (f32)"), std::string::npos) << (*gguf_model)->format();
  EXPECT_EQ((*gguf_model)->config().head_dim, 8);
  EXPECT_EQ((*gguf_model)->classifier().data, (*gguf_model)->token_embedding().data);  // tied: no output tensor
  EXPECT_EQ((*gguf_model)->owned_bytes(), 0u);  // everything in place from the map
}

TEST(GgufModel, HuggingFaceFolderThroughGgufKeepsTheInterleavedRopeOrder) {
  A2SF_REQUIRE_FIXTURES();
  // HF (rotate-half rows) -> engine (interleaved) -> GGUF: the GGUF rows must be the .bin's.
  auto hf = *LoadModel(FixturesDir() + "/stories260K-hf");
  gguf::GgufWriter writer;
  ASSERT_TRUE(WriteGgufModel(*hf, std::nullopt, &writer, TempPath("from-hf.gguf")).ok());
  auto bin = *LoadModel(FixturesDir() + "/stories260K-dq.bin");
  auto from_hf = LoadModel(TempPath("from-hf.gguf"));
  ASSERT_TRUE(from_hf.ok()) << from_hf.status();
  // The HF fixture has an untied lm_head copy; compare the matrices the two share.
  for (int l = 0; l < 5; ++l) {
    EXPECT_EQ(RowsAsFloats(bin->layer(l).wq), RowsAsFloats((*from_hf)->layer(l).wq)) << l;
    EXPECT_EQ(RowsAsFloats(bin->layer(l).wk), RowsAsFloats((*from_hf)->layer(l).wk)) << l;
  }
  // And back out to an HF folder: the q/k permutation is undone, the loader reads the same model.
  ASSERT_TRUE(WriteHuggingFaceFolder(*bin, WeightType::kF32, TempPath("hf-out")).ok());
  auto hf_again = LoadModel(TempPath("hf-out"));
  ASSERT_TRUE(hf_again.ok()) << hf_again.status();
  ExpectSameWeights(*bin, **hf_again);
  EXPECT_EQ(WriteHuggingFaceFolder(*bin, WeightType::kQ8_0, TempPath("hf-q8")).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GgufModel, Q8_0IsWrittenAsGgufBlocksAndUsedInPlace) {
  A2SF_REQUIRE_FIXTURES();
  std::vector<std::string> notes;
  const std::string path = FixtureAsGguf(WeightType::kQ8_0, "q8.gguf", &notes);
  // w2's rows (172 weights) are not whole blocks: f16, as llama.cpp does, and said once per layer.
  ASSERT_EQ(notes.size(), 5u);
  EXPECT_NE(notes[0].find("ffn_down"), std::string::npos) << notes[0];
  auto bin = *LoadModel(FixturesDir() + "/stories260K-dq.bin");
  LoadOptions in_place;
  in_place.panels = false;  // the f16 rows as the file holds them
  auto q8 = LoadModel(path, in_place);
  ASSERT_TRUE(q8.ok()) << q8.status();
  EXPECT_EQ((*q8)->layer(0).wq.type, WeightType::kQ8_0);
  EXPECT_EQ((*q8)->layer(0).w2.type, WeightType::kF16);
  EXPECT_EQ((*q8)->owned_bytes(), 0u);
  EXPECT_NE((*q8)->format().find("q8_0+f16"), std::string::npos) << (*q8)->format();
  // The values are the q8_0 rounding of the fp32 rows (independently: |w - q| <= half a step).
  const WeightMatrix& src = bin->layer(3).wk;
  const std::vector<float> want = RowsAsFloats(src), got = RowsAsFloats((*q8)->layer(3).wk);
  for (size_t block = 0; block < want.size() / 32; ++block) {
    float amax = 0;
    for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(want[block * 32 + i]));
    for (size_t i = 0; i < 32; ++i) {
      ASSERT_NEAR(got[block * 32 + i], want[block * 32 + i], amax / 127 * 0.5 * 1.01 + 1e-7) << block;
    }
  }
  // Re-written as q8_0 from q8_0: the blocks are copied, byte for byte.
  gguf::GgufWriter writer;
  ASSERT_TRUE(WriteGgufModel(**q8, std::nullopt, &writer, TempPath("q8-again.gguf")).ok());
  auto again = *LoadModel(TempPath("q8-again.gguf"), in_place);
  EXPECT_EQ(0, std::memcmp(again->layer(2).wq.data, (*q8)->layer(2).wq.data, (*q8)->layer(2).wq.bytes()));
  // Loading with --weights=f32 converts on load.
  LoadOptions f32;
  f32.weights = WeightType::kF32;
  auto widened = LoadModel(path, f32);
  ASSERT_TRUE(widened.ok()) << widened.status();
  EXPECT_EQ(widened->get()->layer(3).wk.type, WeightType::kF32);
  EXPECT_EQ(RowsAsFloats(widened->get()->layer(3).wk), got);
}

// Byte patches of a valid file, each a classic breakage.
class GgufModelErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    if (FixturesDir().empty()) GTEST_SKIP() << "stories260K fixtures not found";
    original_ = ReadAll(FixtureAsGguf(WeightType::kF32, "errors-base.gguf"));
  }
  absl::Status LoadPatched(const std::function<void(std::string*)>& patch) {
    std::string bytes = original_;
    patch(&bytes);
    WriteAll(TempPath("patched.gguf"), bytes);
    return LoadModel(TempPath("patched.gguf")).status();
  }
  static void Replace(std::string* bytes, const std::string& from, const std::string& to) {
    const size_t at = bytes->find(from);
    ASSERT_NE(at, std::string::npos) << from;
    bytes->replace(at, from.size(), to);
  }
  // The uint32 type field of tensor `name`'s descriptor (after its name and one or two dims).
  static size_t TypeFieldOf(const std::string& bytes, const std::string& name) {
    const size_t at = bytes.find(name) + name.size();
    uint32_t n_dims;
    std::memcpy(&n_dims, bytes.data() + at, 4);
    return at + 4 + 8 * n_dims;
  }
  // The status's code, its words, and the file's name (also in the errors found once the loader has
  // taken the file's mapping over: those named '' before).
  static void Expect(const absl::Status& s, absl::StatusCode code, const std::string& words) {
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_NE(s.message().find(words), std::string::npos) << s;
    EXPECT_NE(s.message().find("'" + TempPath("patched.gguf") + "'"), std::string::npos) << s;
  }
  std::string original_;
};

TEST_F(GgufModelErrors, EachBreakageGetsAStatusThatNamesIt) {
  Expect(LoadPatched([](std::string* b) {
           const std::string key = "general.architecture" + std::string("\x08\0\0\0\x05\0\0\0\0\0\0\0", 12);
           Replace(b, key + "llama", key + "mamba"); }),
         absl::StatusCode::kInvalidArgument, "architecture 'mamba'");
  Expect(LoadPatched([](std::string* b) { Replace(b, "blk.1.attn_k.weight", "blk.1.attn_x.weight"); }),
         absl::StatusCode::kInvalidArgument, "missing tensor 'blk.1.attn_k.weight'");
  Expect(LoadPatched([](std::string* b) { Replace(b, "blk.1.attn_k.weight", "blk.1.attn_q.weight"); }),
         absl::StatusCode::kInvalidArgument, "duplicate tensor 'blk.1.attn_q.weight'");
  Expect(LoadPatched([](std::string* b) { Replace(b, "llama.block_count", "llama.block_cnunt"); }),
         absl::StatusCode::kInvalidArgument, "llama.block_count");
  Expect(LoadPatched([](std::string* b) {
           const size_t at = TypeFieldOf(*b, "blk.2.ffn_up.weight");
           (*b)[at] = 12;  // q4_K
         }),
         absl::StatusCode::kUnimplemented, "type q4_K");
  Expect(LoadPatched([](std::string* b) {
           const size_t at = TypeFieldOf(*b, "output_norm.weight") - 8;  // its one dim
           (*b)[at] = 32;
         }),
         absl::StatusCode::kInvalidArgument, "tensor 'output_norm.weight' has dims [32]");
  Expect(LoadPatched([](std::string* b) {
           const size_t at = b->find("llama.attention.head_count_kv") + 29 + 4;
           (*b)[at] = 3;  // 8 heads are not a multiple of 3 KV heads
         }),
         absl::StatusCode::kInvalidArgument, "n_kv_heads");
  // Every truncation fails; none crashes.
  for (size_t n = 0; n < original_.size(); n += 997) {
    const absl::Status s = LoadPatched([n](std::string* b) { b->resize(n); });
    EXPECT_FALSE(s.ok()) << n;
  }
}

}  // namespace
}  // namespace a2sf::worker
