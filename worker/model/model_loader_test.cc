#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "worker/model/model.h"
#include "worker/testing/fixtures.h"

namespace a2sf::worker {
namespace {

using testing::FixturesDir;

std::string TempDir() { return std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp"; }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), data.size());
}

bool SameFloats(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * 4) == 0; }

// A matrix of any type as its fp32 values, row-major.
std::vector<float> Floats(const WeightMatrix& m) {
  std::vector<float> out(size_t(m.rows) * m.cols);
  for (int64_t r = 0; r < m.rows; ++r) m.RowToFloat(r, out.data() + r * m.cols);
  return out;
}

// Matrices as the files hold them (row-major, used in place where the type allows).
LoadOptions InRows() {
  LoadOptions options;
  options.panels = false;
  return options;
}

TEST(ModelLoader, ReadsTheStories260KConfig) {
  A2SF_REQUIRE_FIXTURES();
  auto w = LoadModel(FixturesDir() + "/stories260K-dq.bin", InRows());
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelConfig& c = (*w)->config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_TRUE(c.shared_classifier);
  EXPECT_EQ((*w)->classifier().data, (*w)->token_embedding().data);
  EXPECT_EQ((*w)->weight_types(), "f32");
  EXPECT_EQ((*w)->owned_bytes(), 0u);  // every tensor used in place from the map
}

// By default float matrices are copied into panels (weights.h): the same values row by row, each
// matrix owned with its rows padded to whole panels; the norms stay in place.
TEST(ModelLoader, FloatMatricesGoInPanelsByDefault) {
  A2SF_REQUIRE_FIXTURES();
  auto rows = LoadModel(FixturesDir() + "/stories260K-dq.bin", InRows());
  auto panels = LoadModel(FixturesDir() + "/stories260K-dq.bin");
  ASSERT_TRUE(rows.ok() && panels.ok());
  const ModelWeights &a = **rows, &b = **panels;
  EXPECT_FALSE(a.classifier().panels());
  EXPECT_TRUE(b.classifier().panels());
  EXPECT_EQ(b.classifier().data, b.token_embedding().data);  // still one tied matrix
  EXPECT_EQ(Floats(a.token_embedding()), Floats(b.token_embedding()));
  size_t expected_owned = b.token_embedding().bytes();
  for (int l = 0; l < a.config().n_layers; ++l) {
    for (const LayerMatrixField& f : kLayerMatrices) {
      const WeightMatrix &m = a.layer(l).*f.member, &p = b.layer(l).*f.member;
      EXPECT_TRUE(p.panels()) << f.gguf_name;
      EXPECT_EQ(Floats(m), Floats(p)) << "layer " << l << " " << f.gguf_name;
      // hidden 172 = 10 panels and 12 rows: w1 and w3 are padded to 176 rows.
      EXPECT_EQ(p.bytes(), size_t((m.rows + 15) / 16 * 16) * m.cols * 4) << f.gguf_name;
      expected_owned += p.bytes();
    }
  }
  EXPECT_EQ(b.owned_bytes(), expected_owned);
}

// The int8 export is held as q8_0: its int8 values as they are, each group's fp32 scale rounded to
// fp16 (relative error <= 2^-11 against the exactly dequantized fp32 file); w2's groups cross its
// 172-wide rows, so it is held as f32, exactly, and said so.
TEST(ModelLoader, Int8ExportIsHeldAsQ8_0WithFp16RoundedScales) {
  A2SF_REQUIRE_FIXTURES();
  auto fp32 = *LoadModel(FixturesDir() + "/stories260K-dq.bin");
  auto int8 = *LoadModel(FixturesDir() + "/stories260K_q80.bin");
  EXPECT_EQ(int8->token_embedding().type, WeightType::kQ8_0);
  EXPECT_EQ(int8->weight_types(), "q8_0+f32");
  ASSERT_EQ(int8->load_notes().size(), 5u);  // w2 of each layer
  EXPECT_NE(int8->load_notes()[0].find("held as f32"), std::string::npos);
  auto near = [](const std::vector<float>& a, const std::vector<float>& b) {
    for (size_t i = 0; i < a.size(); ++i) {
      if (!(std::fabs(a[i] - b[i]) <= std::fabs(a[i]) * 0x1p-11f)) return false;
    }
    return a.size() == b.size();
  };
  EXPECT_TRUE(near(Floats(fp32->token_embedding()), Floats(int8->token_embedding())));
  for (int l = 0; l < 5; ++l) {
    const LayerWeights &a = fp32->layer(l), &b = int8->layer(l);
    EXPECT_EQ(b.wq.type, WeightType::kQ8_0);
    EXPECT_TRUE(near(Floats(a.wq), Floats(b.wq))) << l;
    EXPECT_TRUE(near(Floats(a.wk), Floats(b.wk))) << l;
    EXPECT_EQ(b.w2.type, WeightType::kF32);
    EXPECT_EQ(Floats(a.w2), Floats(b.w2)) << l;
    EXPECT_TRUE(SameFloats(a.rms_ffn, b.rms_ffn, 64));
  }
  EXPECT_TRUE(SameFloats(fp32->rms_final(), int8->rms_final(), 64));
  // Each tensor is held once: the f32 w2 (in panels) does not keep its row-major intermediate.
  EXPECT_TRUE(int8->layer(0).w2.panels());
  size_t held = int8->token_embedding().bytes();  // the fp32 norms are used in place
  for (int l = 0; l < 5; ++l) {
    for (const LayerMatrixField& f : kLayerMatrices) held += (int8->layer(l).*f.member).bytes();
  }
  EXPECT_EQ(int8->owned_bytes(), held);
}

TEST(ModelLoader, WeightsOptionConvertsOnLoadAndKeepsUnfitRowsInF16) {
  A2SF_REQUIRE_FIXTURES();
  auto fp32 = *LoadModel(FixturesDir() + "/stories260K-dq.bin");
  for (WeightType type : {WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0, WeightType::kQ4_0}) {
    LoadOptions options;
    options.weights = type;
    auto w = LoadModel(FixturesDir() + "/stories260K-dq.bin", options);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ((*w)->layer(0).wq.type, type);
    EXPECT_EQ((*w)->token_embedding().type, type);
    // w2's rows hold 172 weights: not whole 32-blocks.
    const bool quantized = type == WeightType::kQ8_0 || type == WeightType::kQ4_0;
    EXPECT_EQ((*w)->layer(3).w2.type, quantized ? WeightType::kF16 : type);
    EXPECT_EQ((*w)->load_notes().size(), quantized ? 5u : 0u);
    EXPECT_NE((*w)->format().find(WeightTypeName(type)), std::string::npos) << (*w)->format();
    // Same values as the type's own rounding of the fp32 ones (the conversion is the traits' row).
    std::vector<float> fp32_row(64), want(64);
    std::vector<uint8_t> bytes(RowBytes(type, 64));
    fp32->layer(1).wv.RowToFloat(7, fp32_row.data());
    Traits(type).from_float(fp32_row.data(), bytes.data(), 64);
    Traits(type).to_float(bytes.data(), want.data(), 64);
    std::vector<float> got(64);
    (*w)->layer(1).wv.RowToFloat(7, got.data());
    EXPECT_EQ(got, want) << WeightTypeName(type);
    EXPECT_LT((*w)->bytes_per_token(), fp32->bytes_per_token());
  }
}

TEST(ModelLoader, HuggingFaceFolderEqualsTheBinAfterTheRopePermutation) {
  A2SF_REQUIRE_FIXTURES();
  auto bin = *LoadModel(FixturesDir() + "/stories260K-dq.bin");
  auto hf = LoadModel(FixturesDir() + "/stories260K-hf");
  ASSERT_TRUE(hf.ok()) << hf.status();
  for (int l = 0; l < 5; ++l) {
    EXPECT_EQ(Floats(bin->layer(l).wq), Floats((*hf)->layer(l).wq)) << l;
    EXPECT_EQ(Floats(bin->layer(l).wk), Floats((*hf)->layer(l).wk)) << l;
    EXPECT_EQ(Floats(bin->layer(l).w1), Floats((*hf)->layer(l).w1)) << l;
  }
  EXPECT_NE((*hf)->format().find("F32"), std::string::npos);
}

TEST(ModelLoader, HalfAndBfloatSafetensorsAreUsedInPlace) {
  A2SF_REQUIRE_FIXTURES();
  // Rewrite the fixture's safetensors with every tensor in fp16 (then bf16).
  const std::string src = ReadAll(FixturesDir() + "/stories260K-hf/model.safetensors");
  uint64_t header_len;
  std::memcpy(&header_len, src.data(), 8);
  std::string header = src.substr(8, header_len);
  const std::string data = src.substr(8 + header_len);
  for (const std::string dtype : {"F16", "BF16"}) {
    // Offsets halve: every tensor is F32 and laid out back to back.
    std::string h = header;
    std::string out_data(data.size() / 2, '\0');
    for (size_t i = 0; i < data.size() / 4; ++i) {
      float f;
      std::memcpy(&f, data.data() + 4 * i, 4);
      uint16_t v;
      if (dtype == "BF16") {
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        v = uint16_t(bits >> 16);  // truncation: exact for the check below
      } else {
        v = 0;  // fp16 via _Float16 would round; use the F16C-free path: only small exact values matter
        _Float16 half = static_cast<_Float16>(f);
        std::memcpy(&v, &half, 2);
      }
      std::memcpy(&out_data[2 * i], &v, 2);
    }
    size_t pos = 0;
    while ((pos = h.find("\"F32\"", pos)) != std::string::npos) h.replace(pos, 5, "\"" + dtype + "\""), pos += 4;
    // Halve data_offsets.
    std::string fixed;
    for (size_t i = 0; i < h.size();) {
      const size_t k = h.find("\"data_offsets\":[", i);
      if (k == std::string::npos) {
        fixed += h.substr(i);
        break;
      }
      const size_t start = k + 16, comma = h.find(',', start), end = h.find(']', comma);
      fixed += h.substr(i, start - i) + std::to_string(std::stoull(h.substr(start, comma - start)) / 2) + "," +
               std::to_string(std::stoull(h.substr(comma + 1, end - comma - 1)) / 2) + "]";
      i = end + 1;
    }
    while (fixed.size() % 8 != 0) fixed += ' ';
    const std::string dir = TempDir() + "/hf_" + dtype;
    std::filesystem::create_directories(dir);
    WriteAll(dir + "/config.json", ReadAll(FixturesDir() + "/stories260K-hf/config.json"));
    uint64_t len = fixed.size();
    WriteAll(dir + "/model.safetensors", std::string(reinterpret_cast<char*>(&len), 8) + fixed + out_data);
    auto w = LoadModel(dir, InRows());
    ASSERT_TRUE(w.ok()) << dtype << ": " << w.status();
    EXPECT_NE((*w)->format().find(dtype), std::string::npos);
    // Held in the file's type: only q/k (permuted rows) and the norms (as fp32) are owned copies.
    EXPECT_EQ((*w)->layer(2).wo.type, dtype == "BF16" ? WeightType::kBF16 : WeightType::kF16);
    EXPECT_EQ((*w)->layer(2).wq.type, (*w)->layer(2).wo.type);
    EXPECT_EQ((*w)->owned_bytes(), size_t(5 * (64 * 64 + 32 * 64) * 2 + (5 * 2 + 1) * 64 * 4));
    auto reference = *LoadModel(FixturesDir() + "/stories260K-hf");
    const std::vector<float> ref_wo = Floats(reference->layer(2).wo), wo = Floats((*w)->layer(2).wo);
    for (int i = 0; i < 64 * 64; ++i) {
      const float a = ref_wo[i], b = wo[i];
      ASSERT_NEAR(a, b, std::fabs(a) * (dtype == "BF16" ? 1.0 / 128 : 1.0 / 1024) + 1e-7) << dtype << " " << i;
    }
  }
}

TEST(ModelLoader, TruncatedAndCorruptedCheckpointsFailCleanly) {
  A2SF_REQUIRE_FIXTURES();
  // Randomised corruption: truncations and flipped header bytes of both llama2.c formats must give an
  // error or a valid model, never a crash; truncations must always fail.
  std::mt19937 rng(17);
  for (const char* name : {"stories260K-dq.bin", "stories260K_q80.bin"}) {
    const std::string original = ReadAll(FixturesDir() + "/" + name);
    const std::string path = TempDir() + "/corrupt.bin";
    for (int trial = 0; trial < 40; ++trial) {
      WriteAll(path, original.substr(0, rng() % original.size()));
      auto w = LoadModel(path);
      EXPECT_FALSE(w.ok()) << name << " truncated loaded";
    }
    for (int trial = 0; trial < 60; ++trial) {
      std::string bytes = original;
      const size_t at = rng() % 64;
      bytes[at] = char(rng());
      WriteAll(path, bytes);
      auto w = LoadModel(path);
      if (!w.ok()) {
        EXPECT_FALSE(w.status().message().empty());
      }
    }
  }
  EXPECT_EQ(LoadModel("/nonexistent/model.bin").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadModel(TempDir()).status().code(), absl::StatusCode::kNotFound);  // a folder without config.json
  EXPECT_FALSE(LoadModel("").ok());
}

TEST(ModelLoader, RandomlyCorruptedSafetensorsFailCleanly) {
  A2SF_REQUIRE_FIXTURES();
  // Flips bytes in the JSON header and the first tensors, and truncates, with a fixed seed (the
  // corpus is reproducible): every load either fails with a message or yields a model, never crashes.
  const std::string dir = TempDir() + "/hf_fuzz";
  std::filesystem::create_directories(dir);
  WriteAll(dir + "/config.json", ReadAll(FixturesDir() + "/stories260K-hf/config.json"));
  const std::string original = ReadAll(FixturesDir() + "/stories260K-hf/model.safetensors");
  std::mt19937 rng(23);
  int failed = 0;
  for (int trial = 0; trial < 150; ++trial) {
    std::string bytes = original;
    if (trial % 3 == 0) {
      bytes.resize(rng() % bytes.size());
    } else {
      for (int k = 0; k < 1 + int(rng() % 4); ++k) bytes[rng() % 6000] = char(rng());
    }
    WriteAll(dir + "/model.safetensors", bytes);
    auto w = LoadModel(dir);
    if (!w.ok()) {
      ++failed;
      EXPECT_FALSE(w.status().message().empty());
    }
  }
  EXPECT_GE(failed, 50);  // every truncation at least
}

TEST(ModelLoader, BadHuggingFaceFoldersNameTheProblem) {
  A2SF_REQUIRE_FIXTURES();
  const std::string dir = TempDir() + "/hf_bad";
  std::filesystem::create_directories(dir);
  const std::string config = ReadAll(FixturesDir() + "/stories260K-hf/config.json");
  const std::string tensors = ReadAll(FixturesDir() + "/stories260K-hf/model.safetensors");
  // A config whose shape does not match the tensors.
  std::string wrong = config;
  wrong.replace(wrong.find("\"intermediate_size\": 172"), 24, "\"intermediate_size\": 170");
  WriteAll(dir + "/config.json", wrong);
  WriteAll(dir + "/model.safetensors", tensors);
  auto w = LoadModel(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("gate_proj"), std::string::npos) << w.status();
  // Truncated tensor data.
  WriteAll(dir + "/config.json", config);
  WriteAll(dir + "/model.safetensors", tensors.substr(0, tensors.size() - 1000));
  w = LoadModel(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kDataLoss) << w.status();
  // An unsupported dtype.
  std::string i8 = tensors;
  i8.replace(i8.find("\"F32\""), 5, "\"I8\" ");
  WriteAll(dir + "/model.safetensors", i8);
  w = LoadModel(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kUnimplemented) << w.status();
  // A header that is not JSON.
  std::string garbage = tensors;
  garbage[20] = '{';
  garbage[21] = '{';
  WriteAll(dir + "/model.safetensors", garbage);
  EXPECT_FALSE(LoadModel(dir).ok());
  // Missing weights file.
  std::remove((dir + "/model.safetensors").c_str());
  EXPECT_EQ(LoadModel(dir).status().code(), absl::StatusCode::kNotFound);
}

TEST(SyntheticModel, WritesACheckpointThatLoadsBackIdentically) {
  auto shape = NamedShape("stories260K", 2);
  ASSERT_TRUE(shape.ok());
  auto model = MakeSyntheticModel(*shape, 7);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string path = TempDir() + "/synthetic.bin";
  ASSERT_TRUE(WriteLlama2cCheckpoint(**model, path).ok());
  auto loaded = LoadModel(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config().n_layers, 2);
  EXPECT_EQ(Floats((*model)->layer(1).w2), Floats((*loaded)->layer(1).w2));
  EXPECT_EQ(Floats((*model)->token_embedding()), Floats((*loaded)->token_embedding()));
  // Same seed, same weights; another seed, others.
  auto again = *MakeSyntheticModel(*shape, 7);
  auto other = *MakeSyntheticModel(*shape, 8);
  EXPECT_EQ(Floats((*model)->layer(0).wq), Floats(again->layer(0).wq));
  EXPECT_NE(Floats((*model)->layer(0).wq), Floats(other->layer(0).wq));
  // Held in another type: the same draws, quantized.
  auto q8 = *MakeSyntheticModel(*shape, 7, WeightType::kQ8_0);
  EXPECT_EQ(q8->layer(0).wq.type, WeightType::kQ8_0);
  EXPECT_EQ(q8->layer(0).w2.type, WeightType::kF16);  // rows of 172
  const std::vector<float> a = Floats((*model)->layer(0).wq), b = Floats(q8->layer(0).wq);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 0.125f / 127) << i;  // |w| <= 1/8
  EXPECT_FALSE(NamedShape("gpt-5").ok());
  EXPECT_EQ(NamedShape("stories110M")->vocab_size, 32000);
}

// A matrix of fewer rows than a panel stays row-major even when panels are asked for; a synthetic
// model must still own it (it was once left pointing into the scratch the next matrix is drawn into,
// then freed: found by scripts/fuzz.sh's generate fuzzer under AddressSanitizer). Same draws with and
// without panels give the same weights.
TEST(SyntheticModel, MatricesTooSmallForPanelsAreOwnedAndKeepTheirValues) {
  ModelConfig c;
  c.dim = 16, c.hidden_dim = 32, c.n_layers = 2, c.n_heads = 2, c.n_kv_heads = 1, c.head_dim = 8;
  c.vocab_size = 64, c.seq_len = 16, c.shared_classifier = true;
  auto rows = MakeSyntheticModel(c, 3, WeightType::kF32, /*panels=*/false);
  auto panels = MakeSyntheticModel(c, 3, WeightType::kF32, /*panels=*/true);
  ASSERT_TRUE(rows.ok() && panels.ok());
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights &a = (*rows)->layer(l), &b = (*panels)->layer(l);
    EXPECT_FALSE(b.wk.panels());  // 8 rows
    EXPECT_TRUE(b.wq.panels());   // 16 rows
    EXPECT_EQ(Floats(a.wk), Floats(b.wk)) << l;
    EXPECT_EQ(Floats(a.wv), Floats(b.wv)) << l;
    EXPECT_EQ(Floats(a.wq), Floats(b.wq)) << l;
    EXPECT_EQ(Floats(a.w2), Floats(b.w2)) << l;
  }
}

}  // namespace
}  // namespace a2sf::worker
