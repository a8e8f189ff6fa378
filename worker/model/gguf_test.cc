#include "worker/model/gguf.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace a2sf::worker::gguf {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), data.size());
}

// Hand-encoded GGUF pieces, written from the format description (not with GgufWriter), so the
// reader is checked against the layout rather than against its own writer.
template <typename T>
std::string Le(T v) {
  std::string out(sizeof(T), '\0');
  std::memcpy(&out[0], &v, sizeof(T));
  return out;
}
std::string Str(const std::string& s) { return Le<uint64_t>(s.size()) + s; }
std::string Header(uint32_t version, uint64_t tensors, uint64_t kvs) {
  return "GGUF" + Le<uint32_t>(version) + Le<uint64_t>(tensors) + Le<uint64_t>(kvs);
}
std::string KvU32(const std::string& key, uint32_t v) { return Str(key) + Le<uint32_t>(4) + Le<uint32_t>(v); }
std::string TensorInfoBytes(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
  std::string out = Str(name) + Le<uint32_t>(dims.size());
  for (uint64_t d : dims) out += Le<uint64_t>(d);
  return out + Le<uint32_t>(type) + Le<uint64_t>(offset);
}
std::string PadTo(std::string s, size_t alignment) {
  while (s.size() % alignment != 0) s += '\0';
  return s;
}

// Two f32 tensors of 4 and 2x8 values at offsets 0 and 32 (alignment 32), plus one of each value type.
std::string HandMadeFile() {
  std::string kv = KvU32("general.alignment", 32) + Str("general.architecture") + Le<uint32_t>(8) + Str("llama") +
                   Str("a.u8") + Le<uint32_t>(0) + Le<uint8_t>(200) + Str("a.i8") + Le<uint32_t>(1) + Le<int8_t>(-5) +
                   Str("a.u16") + Le<uint32_t>(2) + Le<uint16_t>(60000) + Str("a.i16") + Le<uint32_t>(3) +
                   Le<int16_t>(-300) + Str("a.i32") + Le<uint32_t>(5) + Le<int32_t>(-70000) + Str("a.f32") +
                   Le<uint32_t>(6) + Le<float>(0.25f) + Str("a.bool") + Le<uint32_t>(7) + Le<uint8_t>(1) +
                   Str("a.u64") + Le<uint32_t>(10) + Le<uint64_t>(1ull << 40) + Str("a.i64") + Le<uint32_t>(11) +
                   Le<int64_t>(-(1ll << 40)) + Str("a.f64") + Le<uint32_t>(12) + Le<double>(1e-300) +
                   Str("a.strings") + Le<uint32_t>(9) + Le<uint32_t>(8) + Le<uint64_t>(2) + Str("x") + Str("") +
                   Str("a.nested") + Le<uint32_t>(9) + Le<uint32_t>(9) + Le<uint64_t>(1) + Le<uint32_t>(5) +
                   Le<uint64_t>(2) + Le<int32_t>(7) + Le<int32_t>(-7);
  std::string file = Header(3, 2, 14) + kv + TensorInfoBytes("norm", {4}, 0, 0) +
                     TensorInfoBytes("matrix", {8, 2}, 0, 32);
  file = PadTo(file, 32);
  std::string data;
  for (int i = 0; i < 4; ++i) data += Le<float>(float(i));
  data = PadTo(data, 32);
  for (int i = 0; i < 16; ++i) data += Le<float>(float(100 + i));
  return file + data;
}

TEST(GgufFile, ReadsEveryValueTypeAndLocatesTensors) {
  const std::string path = TempPath("hand.gguf");
  WriteAll(path, HandMadeFile());
  absl::StatusOr<GgufFile> file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(*file->GetString("general.architecture"), "llama");
  EXPECT_EQ(*file->GetInteger("a.u8"), 200);
  EXPECT_EQ(*file->GetInteger("a.i8"), -5);
  EXPECT_EQ(*file->GetInteger("a.u16"), 60000);
  EXPECT_EQ(*file->GetInteger("a.i16"), -300);
  EXPECT_EQ(*file->GetInteger("a.i32"), -70000);
  EXPECT_EQ(*file->GetFloat("a.f32"), 0.25);
  EXPECT_TRUE(*file->GetBool("a.bool"));
  EXPECT_EQ(*file->GetInteger("a.u64"), 1ll << 40);
  EXPECT_EQ(*file->GetInteger("a.i64"), -(1ll << 40));
  EXPECT_EQ(*file->GetFloat("a.f64"), 1e-300);
  auto strings = file->GetArray("a.strings", ValueType::kString);
  ASSERT_TRUE(strings.ok());
  ASSERT_EQ((*strings)->size(), 2u);
  EXPECT_EQ((**strings)[0].text, "x");
  auto nested = file->GetArray("a.nested", ValueType::kArray);
  ASSERT_TRUE(nested.ok());
  EXPECT_EQ((**nested)[0].elements[1].integer, -7);
  // Wrong types and missing keys name the key.
  EXPECT_EQ(file->GetString("a.u8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(file->GetString("a.u8").status().message().find("a.u8"), std::string::npos);
  EXPECT_EQ(file->GetInteger("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(file->GetArray("a.strings", ValueType::kFloat32).ok());

  const TensorInfo* matrix = file->FindTensor("matrix");
  ASSERT_NE(matrix, nullptr);
  EXPECT_EQ(matrix->dims, (std::vector<uint64_t>{8, 2}));
  EXPECT_EQ(matrix->bytes, 64u);
  float first;
  std::memcpy(&first, matrix->data, 4);
  EXPECT_EQ(first, 100.0f);
  EXPECT_EQ(file->FindTensor("norm")->bytes, 16u);
  EXPECT_EQ(file->FindTensor("absent"), nullptr);
}

TEST(GgufFile, EveryTruncationFailsCleanly) {
  const std::string whole = HandMadeFile();
  const std::string path = TempPath("cut.gguf");
  for (size_t n = 1; n < whole.size(); ++n) {
    WriteAll(path, whole.substr(0, n));
    absl::StatusOr<GgufFile> file = GgufFile::Open(path);
    ASSERT_FALSE(file.ok()) << "loaded with " << n << " of " << whole.size() << " bytes";
    EXPECT_NE(file.status().message().find(path), std::string::npos) << file.status();
  }
}

TEST(GgufFile, RefusesMalformedStructure) {
  const std::string path = TempPath("bad.gguf");
  auto open = [&](const std::string& bytes) {
    WriteAll(path, bytes);
    return GgufFile::Open(path).status();
  };
  auto expect = [&](const std::string& bytes, absl::StatusCode code, const std::string& words) {
    const absl::Status s = open(bytes);
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_NE(s.message().find(words), std::string::npos) << s;
  };
  const std::string f32_data(64, '\0');
  expect("GGML" + std::string(40, '\0'), absl::StatusCode::kInvalidArgument, "not a GGUF file");
  expect(Header(1, 0, 0), absl::StatusCode::kUnimplemented, "version 1");
  expect(Header(3, 0, 1ull << 60), absl::StatusCode::kInvalidArgument, "metadata count");
  expect(Header(3, 1ull << 60, 0), absl::StatusCode::kInvalidArgument, "tensor count");
  expect(Header(3, 0, 2) + KvU32("a", 1) + KvU32("a", 2), absl::StatusCode::kInvalidArgument, "duplicate metadata key");
  expect(Header(3, 0, 1) + Str("a") + Le<uint32_t>(99) + Le<uint32_t>(0), absl::StatusCode::kInvalidArgument,
         "unknown value type 99");
  expect(Header(3, 0, 1) + Str("b") + Le<uint32_t>(7) + Le<uint8_t>(2), absl::StatusCode::kInvalidArgument,
         "bool of value 2");
  expect(Header(3, 0, 1) + Str("arr") + Le<uint32_t>(9) + Le<uint32_t>(8) + Le<uint64_t>(1ull << 50),
         absl::StatusCode::kInvalidArgument, "claims");
  // Arrays nested deeper than four levels.
  std::string deep = Header(3, 0, 1) + Str("deep") + Le<uint32_t>(9);
  for (int i = 0; i < 6; ++i) deep += Le<uint32_t>(9) + Le<uint64_t>(1);
  expect(deep + std::string(64, '\0'), absl::StatusCode::kInvalidArgument, "too deeply");
  expect(Header(3, 0, 1) + KvU32("general.alignment", 24), absl::StatusCode::kInvalidArgument, "power of two");
  expect(Header(3, 0, 1) + KvU32("general.alignment", 0), absl::StatusCode::kInvalidArgument, "power of two");
  expect(PadTo(Header(3, 1, 0) + TensorInfoBytes("t", {16}, 0, 8), 32) + f32_data, absl::StatusCode::kInvalidArgument,
         "not a multiple of the alignment");
  expect(PadTo(Header(3, 2, 0) + TensorInfoBytes("t", {4}, 0, 0) + TensorInfoBytes("t", {4}, 0, 32), 32) + f32_data,
         absl::StatusCode::kInvalidArgument, "duplicate tensor 't'");
  expect(PadTo(Header(3, 2, 0) + TensorInfoBytes("a", {16}, 0, 0) + TensorInfoBytes("b", {4}, 0, 32), 32) + f32_data +
             f32_data,
         absl::StatusCode::kInvalidArgument, "overlap");
  expect(PadTo(Header(3, 1, 0) + TensorInfoBytes("t", {1ull << 30, 1ull << 30}, 0, 0), 32) + f32_data,
         absl::StatusCode::kInvalidArgument, "absurd dimension");
  expect(PadTo(Header(3, 1, 0) + TensorInfoBytes("t", {0}, 0, 0), 32) + f32_data, absl::StatusCode::kInvalidArgument,
         "absurd dimension");
  expect(PadTo(Header(3, 1, 0) + TensorInfoBytes("t", {1, 1, 1, 1, 1}, 0, 0), 32) + f32_data,
         absl::StatusCode::kInvalidArgument, "5 dimensions");
  expect(PadTo(Header(3, 1, 0) + TensorInfoBytes("q", {48}, kQ8_0, 0), 32) + f32_data, absl::StatusCode::kInvalidArgument,
         "not a multiple of 32");
  expect(PadTo(Header(3, 1, 0) + TensorInfoBytes("t", {64}, 0, 0), 32) + f32_data, absl::StatusCode::kDataLoss,
         "tensor 't'");
  expect(PadTo(Header(3, 1, 0) + TensorInfoBytes("t", {4}, 0, 1ull << 62), 32) + f32_data, absl::StatusCode::kDataLoss,
         "tensor 't'");
  EXPECT_EQ(open("").code(), absl::StatusCode::kInvalidArgument);  // empty file (MappedFile's refusal)
  EXPECT_EQ(GgufFile::Open(TempPath("missing.gguf")).status().code(), absl::StatusCode::kNotFound);
}

TEST(GgufFile, VersionTwoIsAccepted) {
  std::string bytes = HandMadeFile();
  bytes[4] = 2;
  const std::string path = TempPath("v2.gguf");
  WriteAll(path, bytes);
  absl::StatusOr<GgufFile> file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->version(), 2u);
}

TEST(GgufWriter, WritesWhatTheReaderReadsBack) {
  GgufWriter writer;
  writer.Set("general.architecture", Value::String("llama"));
  writer.Set("general.alignment", Value::Uint32(64));
  writer.Set("x.f", Value::Float32(1.5f));
  writer.Set("x.flag", Value::Bool(false));
  writer.Set("x.list", Value::Array(ValueType::kInt32, {Value::Int32(-1), Value::Int32(2)}));
  writer.Set("x.f", Value::Float32(2.5f));  // replaces, keeps one key
  ASSERT_TRUE(writer.AddTensor("a", {3}, kF32, [](std::vector<uint8_t>* out) {
    const float v[3] = {1, 2, 3};
    out->assign(reinterpret_cast<const uint8_t*>(v), reinterpret_cast<const uint8_t*>(v) + 12);
    return absl::OkStatus();
  }).ok());
  ASSERT_TRUE(writer.AddTensor("q", {64, 2}, kQ8_0, [](std::vector<uint8_t>* out) {
    out->assign(4 * 34, 7);
    return absl::OkStatus();
  }).ok());
  EXPECT_FALSE(writer.AddTensor("a", {3}, kF32, nullptr).ok());        // duplicate
  EXPECT_FALSE(writer.AddTensor("b", {33}, kQ4_0, nullptr).ok());      // not whole blocks
  EXPECT_FALSE(writer.AddTensor("c", {32}, 12 /* q4_K */, nullptr).ok());
  const std::string path = TempPath("written.gguf");
  ASSERT_TRUE(writer.Write(path).ok());
  absl::StatusOr<GgufFile> file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->alignment(), 64u);
  EXPECT_EQ(file->metadata().size(), 5u);
  EXPECT_EQ(*file->GetFloat("x.f"), 2.5);
  EXPECT_FALSE(*file->GetBool("x.flag"));
  EXPECT_EQ((**file->GetArray("x.list", ValueType::kInt32))[0].integer, -1);
  const TensorInfo* q = file->FindTensor("q");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->offset, 64u);
  EXPECT_EQ(q->bytes, 136u);
  EXPECT_EQ(q->data[135], 7);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q->data) % 64, 0u);  // aligned in the mapping too
  // A producer that gets the size wrong fails the write.
  GgufWriter bad;
  ASSERT_TRUE(bad.AddTensor("a", {3}, kF32, [](std::vector<uint8_t>* out) {
    out->resize(8);
    return absl::OkStatus();
  }).ok());
  EXPECT_EQ(bad.Write(TempPath("bad-size.gguf")).code(), absl::StatusCode::kInternal);
}

TEST(GgufTypes, NamesEveryGgmlType) {
  EXPECT_EQ(TensorTypeName(kQ8_0), "q8_0");
  EXPECT_EQ(TensorTypeName(kBF16), "bf16");
  EXPECT_EQ(TensorTypeName(12), "q4_K");
  EXPECT_EQ(TensorTypeName(1000), "type 1000");
}

}  // namespace
}  // namespace a2sf::worker::gguf
