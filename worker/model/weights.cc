#include "worker/model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/float16.h"

namespace a2sf::worker {
namespace {

// --- One function pair per type: the rows of the table below. ---

void F32ToFloat(const void* row, float* out, int64_t n) { std::memcpy(out, row, size_t(n) * 4); }
void F32FromFloat(const float* in, void* row, int64_t n) { std::memcpy(row, in, size_t(n) * 4); }

void F16ToFloat(const void* row, float* out, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    out[i] = HalfToFloat(h);
  }
}
void F16FromFloat(const float* in, void* row, int64_t n) {
  uint8_t* p = static_cast<uint8_t*>(row);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = FloatToHalf(in[i]);
    std::memcpy(p + 2 * i, &h, 2);
  }
}

void Bf16ToFloat(const void* row, float* out, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    out[i] = Bfloat16ToFloat(h);
  }
}
void Bf16FromFloat(const float* in, void* row, int64_t n) {
  uint8_t* p = static_cast<uint8_t*>(row);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = FloatToBfloat16(in[i]);
    std::memcpy(p + 2 * i, &h, 2);
  }
}

// Blocks are read and written through memcpy: inside a file they are unaligned (34 / 18 bytes).
// A last block of n % 32 values (Q8_0Bytes) is read and written as the first 2 + n % 32 bytes of one.
void Q8_0ToFloat(const void* row, float* out, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  for (int64_t b = 0; b * kQuantBlock < n; ++b) {
    const int values = int(std::min<int64_t>(kQuantBlock, n - b * kQuantBlock));
    BlockQ8_0 block;
    std::memcpy(&block, p + b * sizeof(BlockQ8_0), 2 + size_t(values));
    const float d = HalfToFloat(block.d);
    for (int j = 0; j < values; ++j) out[b * kQuantBlock + j] = d * float(block.qs[j]);
  }
}

// llama.cpp's quantize_row_q8_0_ref: d = amax / 127, q = round-half-away(x / d).
void Q8_0FromFloat(const float* in, void* row, int64_t n) {
  uint8_t* p = static_cast<uint8_t*>(row);
  for (int64_t b = 0; b * kQuantBlock < n; ++b) {
    const int values = int(std::min<int64_t>(kQuantBlock, n - b * kQuantBlock));
    const float* x = in + b * kQuantBlock;
    float amax = 0.0f;
    for (int j = 0; j < values; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = InverseScale(d);
    BlockQ8_0 block;
    block.d = FloatToHalf(d);
    for (int j = 0; j < values; ++j) block.qs[j] = int8_t(std::roundf(ScaledToBlock(x[j], id)));
    std::memcpy(p + b * sizeof(BlockQ8_0), &block, 2 + size_t(values));
  }
}

void Q4_0ToFloat(const void* row, float* out, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    BlockQ4_0 block;
    std::memcpy(&block, p + b * sizeof(BlockQ4_0), sizeof(block));
    const float d = HalfToFloat(block.d);
    float* o = out + b * kQuantBlock;
    for (int j = 0; j < kQuantBlock / 2; ++j) {
      o[j] = d * float(int(block.qs[j] & 0x0f) - 8);
      o[j + kQuantBlock / 2] = d * float(int(block.qs[j] >> 4) - 8);
    }
  }
}

// llama.cpp's quantize_row_q4_0_ref: d = max / -8 with max the signed value of largest magnitude
// (so that value maps to q = 0 exactly), q = min(15, int8(x / d + 8.5)) (truncation).
void Q4_0FromFloat(const float* in, void* row, int64_t n) {
  uint8_t* p = static_cast<uint8_t*>(row);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* x = in + b * kQuantBlock;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQuantBlock; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = InverseScale(d);
    BlockQ4_0 block;
    block.d = FloatToHalf(d);
    for (int j = 0; j < kQuantBlock / 2; ++j) {
      const uint8_t lo = uint8_t(std::min(15, int(int8_t(ScaledToBlock(x[j], id) + 8.5f))));
      const uint8_t hi = uint8_t(std::min(15, int(int8_t(ScaledToBlock(x[j + kQuantBlock / 2], id) + 8.5f))));
      block.qs[j] = uint8_t(lo | (hi << 4));
    }
    std::memcpy(p + b * sizeof(BlockQ4_0), &block, sizeof(block));
  }
}

constexpr WeightTypeTraits kTraits[kWeightTypeCount] = {
    {WeightType::kF32, "f32", 0, 1, 4, F32ToFloat, F32FromFloat},
    {WeightType::kF16, "f16", 1, 1, 2, F16ToFloat, F16FromFloat},
    {WeightType::kBF16, "bf16", 30, 1, 2, Bf16ToFloat, Bf16FromFloat},
    {WeightType::kQ8_0, "q8_0", 8, kQuantBlock, sizeof(BlockQ8_0), Q8_0ToFloat, Q8_0FromFloat},
    {WeightType::kQ4_0, "q4_0", 2, kQuantBlock, sizeof(BlockQ4_0), Q4_0ToFloat, Q4_0FromFloat},
};

// Alignment a type needs to be read in place (the kernels load f32 as floats, the rest bytewise).
size_t InPlaceAlignment(WeightType type) { return type == WeightType::kF32 ? 4 : type == WeightType::kQ8_0 || type == WeightType::kQ4_0 ? 1 : 2; }

}  // namespace

const WeightTypeTraits& Traits(WeightType type) { return kTraits[static_cast<int>(type)]; }

const WeightTypeTraits* TraitsForGgufType(uint32_t gguf_type) {
  for (const WeightTypeTraits& t : kTraits) {
    if (t.gguf_type == gguf_type) return &t;
  }
  return nullptr;
}

absl::StatusOr<std::optional<WeightType>> ParseWeightsFlag(const std::string& text) {
  if (text == "auto") return std::optional<WeightType>();
  for (const WeightTypeTraits& t : kTraits) {
    if (text == t.name) return std::optional<WeightType>(t.type);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("weights: 'auto', 'f32', 'f16', 'bf16', 'q8_0' or 'q4_0', got '", text, "'"));
}

absl::StatusOr<WeightType> ParseKvType(const std::string& text) {
  for (WeightType type : {WeightType::kF32, WeightType::kF16, WeightType::kQ8_0}) {
    if (text == WeightTypeName(type)) return type;
  }
  return absl::InvalidArgumentError(absl::StrCat("kv_type: f32, f16 or q8_0, got '", text, "'"));
}

WeightType FallbackType(WeightType wanted, int64_t cols) {
  if (cols % Traits(wanted).block_size == 0) return wanted;
  return WeightType::kF16;
}

size_t RowBytes(WeightType type, int64_t cols) {
  const WeightTypeTraits& t = Traits(type);
  return size_t(cols / t.block_size) * t.block_bytes;
}

const MappedFile& WeightStorage::Keep(MappedFile file) {
  files_.push_back(std::make_unique<MappedFile>(std::move(file)));
  return *files_.back();
}

void WeightStorage::FreeAligned::operator()(uint8_t* p) const { std::free(p); }

uint8_t* WeightStorage::Allocate(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, rounded));
  if (p == nullptr) return nullptr;
  owned_.push_back({std::unique_ptr<uint8_t, FreeAligned>(p), bytes});
  owned_bytes_ += bytes;
  return p;
}

void WeightStorage::Free(const void* p) {
  for (auto it = owned_.begin(); it != owned_.end(); ++it) {
    if (it->bytes.get() != p) continue;
    owned_bytes_ -= it->size;
    owned_.erase(it);
    return;
  }
}

size_t WeightStorage::mapped_bytes() const {
  size_t total = 0;
  for (const auto& f : files_) total += f->size();
  return total;
}

void WeightStorage::Release(const void* p, size_t bytes) const {
  for (const auto& f : files_) {
    if (f->Contains(p)) f->Release(p, bytes);
  }
}

namespace {

// Calls fn(panel offset, row offset, bytes) for every unit of panel row `lane` -- a float weight, a
// quantized block's scale or 2-byte unit -- where weights.h's layout puts it (a LLaMA-2-7B model is
// ~10^10 bytes).
template <typename Fn>
void ForEachUnit(const WeightMatrix& m, int64_t lane, Fn fn) {
  const size_t row_bytes = m.row_bytes(), block_bytes = Traits(m.type).block_bytes;
  if (Traits(m.type).block_size == 1) {
    for (size_t at = 0, to = size_t(lane) * block_bytes; at < row_bytes;
         at += block_bytes, to += kPanelRows * block_bytes) {
      fn(to, at, block_bytes);
    }
    return;
  }
  for (size_t block = 0; block * block_bytes < row_bytes; ++block) {
    const size_t at = block * block_bytes, to = block * kPanelRows * block_bytes + size_t(lane) * 2;
    fn(to, at, 2);  // the scale
    for (size_t unit = 0; unit + 1 < block_bytes / 2; ++unit) {
      fn(to + kQuantPanelUnits + unit * kPanelRows * 2, at + 2 + 2 * unit, 2);
    }
  }
}

// A block of 16 rows (row-major, m.row_bytes() each) as one panel of m's type.
void Pack(const WeightMatrix& m, const uint8_t* block, uint8_t* panel) {
  for (int64_t lane = 0; lane < kPanelRows; ++lane) {
    const uint8_t* row = block + size_t(lane) * m.row_bytes();
    ForEachUnit(m, lane, [&](size_t to, size_t at, size_t n) { std::memcpy(panel + to, row + at, n); });
  }
}

// Source row `from` into `to`, in `type` (bytes copied when the type is the source's).
void PlaceRow(const WeightMatrix& source, int64_t from, WeightType type, uint8_t* to, std::vector<float>* scratch) {
  if (type == source.type) {
    std::memcpy(to, source.row(from), source.row_bytes());
    return;
  }
  scratch->resize(size_t(source.cols));
  source.RowToFloat(from, scratch->data());
  Traits(type).from_float(scratch->data(), to, source.cols);
}

// All rows of `out` (its type and layout) from `source`; row r is source row row_order[r] (or r).
void PlaceRows(const WeightMatrix& source, const std::vector<int64_t>& row_order, const WeightMatrix& out,
               uint8_t* dst) {
  auto from = [&](int64_t r) { return row_order.empty() ? r : row_order[size_t(r)]; };
  const size_t row_bytes = out.row_bytes();
  std::vector<float> scratch;
  if (!out.panels()) {
    for (int64_t r = 0; r < out.rows; ++r) PlaceRow(source, from(r), out.type, dst + size_t(r) * row_bytes, &scratch);
    return;
  }
  std::vector<uint8_t> block(size_t(kPanelRows) * row_bytes);
  for (int64_t first = 0; first < out.rows; first += kPanelRows, dst += block.size()) {
    std::fill(block.begin(), block.end(), 0);  // the last panel's padding rows stay zeros
    for (int64_t r = first; r < std::min(out.rows, first + kPanelRows); ++r) {
      PlaceRow(source, from(r), out.type, block.data() + size_t(r - first) * row_bytes, &scratch);
    }
    Pack(out, block.data(), dst);
  }
}

}  // namespace

void WeightMatrix::CopyRow(int64_t r, uint8_t* out) const {
  if (!panels()) {
    std::memcpy(out, row(r), row_bytes());
    return;
  }
  const uint8_t* p = panel(r / kPanelRows);
  ForEachUnit(*this, r % kPanelRows, [&](size_t from, size_t at, size_t n) { std::memcpy(out + at, p + from, n); });
}

void WeightMatrix::RowToFloat(int64_t r, float* out) const {
  if (!panels()) return Traits(type).to_float(row(r), out, cols);
  // The embedding lookup runs this for every row of every step: no allocation once the buffer grew.
  thread_local std::vector<uint8_t> bytes;
  bytes.resize(row_bytes());
  CopyRow(r, bytes.data());
  Traits(type).to_float(bytes.data(), out, cols);
}

absl::StatusOr<WeightMatrix> PlaceMatrix(const WeightMatrix& source, const PlaceOptions& options,
                                         const std::string& name, WeightStorage* storage, std::string* note) {
  if (source.panels()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': the source must be row-major"));
  }
  if (source.rows <= 0 || source.cols <= 0 || source.cols % Traits(source.type).block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': shape [", source.rows, ", ", source.cols,
                                                   "] is not whole ", WeightTypeName(source.type), " blocks"));
  }
  if (!options.row_order.empty()) {
    if (int64_t(options.row_order.size()) != source.rows) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': row order of ", options.row_order.size(),
                                                     " rows for ", source.rows));
    }
    for (int64_t r : options.row_order) {
      if (r < 0 || r >= source.rows) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': bad row order"));
      }
    }
  }
  const WeightType wanted = options.wanted.value_or(source.type);
  const WeightType type = FallbackType(wanted, source.cols);
  if (type != wanted && note != nullptr) {
    *note = absl::StrCat(name, ": rows of ", source.cols, " weights are not a multiple of ", Traits(wanted).block_size,
                         ": kept as ", WeightTypeName(type), " instead of ", WeightTypeName(wanted));
  }
  // A matrix of fewer rows than a panel stays rows: its padding could multiply its size by up to 16
  // (a hostile file's 1-row matrices), and no LLaMA model has one.
  const bool panels = options.panels && source.rows >= kPanelRows;
  const WeightLayout layout = panels ? WeightLayout::kPanels : WeightLayout::kRows;
  const bool aligned = reinterpret_cast<uintptr_t>(source.data) % InPlaceAlignment(source.type) == 0;
  if (type == source.type && options.row_order.empty() && layout == WeightLayout::kRows && aligned) return source;

  WeightMatrix out{type, nullptr, source.rows, source.cols, layout};
  uint8_t* dst = storage->Allocate(out.bytes());
  if (dst == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("tensor '", name, "': cannot allocate ", out.bytes(), " bytes"));
  }
  out.data = dst;
  PlaceRows(source, options.row_order, out, dst);
  storage->Release(source.data, source.bytes());
  return out;
}

}  // namespace a2sf::worker
