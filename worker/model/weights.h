// Weight types and weight matrices: how the model's matrices are held in memory.
//
// Five types, each one row of a traits table in the style of ggml's (block size, bytes per block,
// name, GGUF type id, row to float, float to row), so every conversion and kernel is written against
// the row of the table, not against the type's name:
//   f32, f16 (IEEE binary16), bf16 -- one weight per "block";
//   q8_0 -- GGUF's block_q8_0: 32 weights as an fp16 scale d and 32 int8 q, weight = d * q;
//   q4_0 -- GGUF's block_q4_0: 32 weights as an fp16 scale d and 16 bytes of 4-bit q, weight =
//           d * (q - 8); byte j holds element j in its low nibble and element j + 16 in its high one.
// The quantized blocks are byte for byte GGUF's (no padding, little-endian, unaligned), so a GGUF
// file's tensors are used in place. Quantizing follows llama.cpp's reference rules
// (quantize_row_q8_0_ref / quantize_row_q4_0_ref), so our q8_0/q4_0 of a tensor equal llama.cpp's.
//
// A WeightMatrix is a non-owning view: [rows][cols], y = W x, each row a whole number of blocks
// (cols % block_size == 0), row-major as in the files or, for the CPU kernels, in panels (below). Its bytes belong to a WeightStorage: either a read-only memory map
// of the model file (weights used in place) or an owned, 64-byte-aligned buffer (tensors that had to
// change: converted, permuted, re-laid-out). Views stay valid as long as their storage lives.
//
// Thread-safety: the traits table and views are immutable and safe to share; WeightStorage is filled
// by one loader thread and is read-only afterwards.
#ifndef A2SF_WORKER_MODEL_WEIGHTS_H_
#define A2SF_WORKER_MODEL_WEIGHTS_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/mapped_file.h"

namespace a2sf::worker {

// In order of decreasing precision (the order FallbackType walks).
enum class WeightType : uint8_t { kF32, kF16, kBF16, kQ8_0, kQ4_0 };
inline constexpr int kWeightTypeCount = 5;
// Tables indexed by WeightType (traits, kernels) list the types in this order.
static_assert(int(WeightType::kF32) == 0 && int(WeightType::kF16) == 1 && int(WeightType::kBF16) == 2 &&
                  int(WeightType::kQ8_0) == 3 && int(WeightType::kQ4_0) == 4 && kWeightTypeCount == 5,
              "WeightType-indexed tables follow this order");
// q8_0 and q4_0: blocks of kQuantBlock weights with a scale, multiplied against 16-bit activations.
inline constexpr bool IsQuantized(WeightType type) { return type == WeightType::kQ8_0 || type == WeightType::kQ4_0; }

inline constexpr int kQuantBlock = 32;  // weights per q8_0 / q4_0 block (GGUF's QK8_0, QK4_0)

// GGUF's blocks, exactly (sizeof 34 and 18, no padding).
struct BlockQ8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[kQuantBlock];
};
struct BlockQ4_0 {
  uint16_t d;                   // fp16 scale
  uint8_t qs[kQuantBlock / 2];  // low nibble: element j, high nibble: element j + 16; value - 8
};
static_assert(sizeof(BlockQ8_0) == 34, "q8_0 block must be GGUF's 34 bytes");
// 1 / d for a block's scale d, or 0 when d is 0 or so small (below ~3e-39) that 1 / d is infinite:
// the block's values then quantize to 0, where a product with infinity would be converted to an
// integer, which C++ leaves undefined. The one rule for every block quantizer (q8_0, q4_0, the
// kernels' 16-bit vector blocks).
inline float InverseScale(float d) {
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  return std::isfinite(id) ? id : 0.0f;
}
// x * id, a value scaled to its block's integer range, or 0 when that is not finite (a NaN or
// infinite input), whose conversion to an integer would be undefined.
inline float ScaledToBlock(float x, float id) {
  const float v = x * id;
  return std::isfinite(v) ? v : 0.0f;
}
// Bytes of n values as q8_0: whole blocks of 32 and, when n is not a multiple of 32, a last block of
// n % 32 values (its first 2 + n % 32 bytes; a KV cache row of a head narrower than 32, say). Weight
// rows are whole blocks (RowBytes); the q8_0 traits' to_float / from_float take either.
inline constexpr size_t Q8_0Bytes(int64_t n) { return size_t(n) + 2 * size_t((n + kQuantBlock - 1) / kQuantBlock); }
static_assert(sizeof(BlockQ4_0) == 18, "q4_0 block must be GGUF's 18 bytes");

struct WeightTypeTraits {
  WeightType type;
  const char* name;       // "f32", "f16", "bf16", "q8_0", "q4_0" (llama.cpp's names)
  uint32_t gguf_type;     // ggml_type id in GGUF files: 0, 1, 30, 8, 2
  int block_size;         // weights per block
  size_t block_bytes;     // bytes per block
  // out[0..n) = the n weights starting at `row` (n a multiple of block_size).
  void (*to_float)(const void* row, float* out, int64_t n);
  // Writes n weights (n a multiple of block_size) as blocks at `row` (GGUF's rounding rules).
  void (*from_float)(const float* in, void* row, int64_t n);
};

const WeightTypeTraits& Traits(WeightType type);
inline const char* WeightTypeName(WeightType type) { return Traits(type).name; }
// By GGUF ggml_type id; nullptr for ids this engine does not run (the caller names the id).
const WeightTypeTraits* TraitsForGgufType(uint32_t gguf_type);

// --weights: "auto" (nullopt: keep what the file holds) or a type name. INVALID_ARGUMENT naming the
// accepted values otherwise.
absl::StatusOr<std::optional<WeightType>> ParseWeightsFlag(const std::string& text);

// The types a KV cache holds keys and values in (EngineOptions::kv_type): f32, f16 and q8_0.
inline bool IsKvType(WeightType type) {
  return type == WeightType::kF32 || type == WeightType::kF16 || type == WeightType::kQ8_0;
}
// A KV type's name ("f32", "f16", "q8_0") as a type; INVALID_ARGUMENT naming them otherwise. What
// --kv_type takes.
absl::StatusOr<WeightType> ParseKvType(const std::string& text);

// The type a matrix with rows of `cols` weights can be held in when `wanted` is asked for: `wanted`
// when cols is a whole number of its blocks, else the next higher-precision type that fits (q8_0 and
// q4_0 fall back to f16, as llama.cpp does).
WeightType FallbackType(WeightType wanted, int64_t cols);

// Bytes of one row of `cols` weights. REQUIRES: cols % block_size == 0.
size_t RowBytes(WeightType type, int64_t cols);

// How a matrix's elements are laid out.
//   kRows:   row-major [rows][cols] (every type; the files' layout).
//   kPanels: every type, for the CPU kernels: rows in panels of kPanelRows, the last panel padded
//            with zero rows. Float types: each panel column-major -- element (r, c) at panel r / 16,
//            position c * 16 + r % 16 -- so a column is one 64-byte line of f32 (32 bytes of
//            f16/bf16) that serves 16 rows at once. q8_0 and q4_0: per 32-column block, the 16 rows'
//            fp16 scales, then the rest of each row's block in 2-byte units, unit u of the 16 rows
//            together (16 rows x 2 bytes): q8_0's 16 units are its column pairs (2u, 2u + 1); q4_0's
//            8 are its bytes 2u, 2u + 1, whose low nibbles are columns (2u, 2u + 1) and high nibbles
//            columns (16 + 2u, 17 + 2u). One load feeds 16 rows' integer pair products
//            (panel_kernels.h).
enum class WeightLayout : uint8_t { kRows, kPanels };
inline constexpr int64_t kPanelRows = 16;

// A quantized panel's bytes per 32-column block (the 16 rows' blocks; 0 for a float type), and where
// its 2-byte units start (after the 16 fp16 scales); unit u is 16 rows x 2 bytes from there.
inline constexpr size_t QuantPanelBlockBytes(WeightType type) {
  switch (type) {
    case WeightType::kQ8_0: return kPanelRows * sizeof(BlockQ8_0);
    case WeightType::kQ4_0: return kPanelRows * sizeof(BlockQ4_0);
    default: return 0;
  }
}
inline constexpr size_t kQuantPanelUnits = kPanelRows * 2;
// The panel layout holds a quantized block as its fp16 scale and then whole 2-byte units; a block type
// of another shape (q4_1's two scales, q5_0's high bits) needs a layout of its own.
static_assert(sizeof(BlockQ8_0) == 2 + 16 * 2 && sizeof(BlockQ4_0) == 2 + 8 * 2,
              "quantized panels hold a block as one fp16 scale and 2-byte units");

// A non-owning view of a matrix [rows][cols] of one type, in `layout`.
struct WeightMatrix {
  WeightType type = WeightType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  WeightLayout layout = WeightLayout::kRows;

  size_t row_bytes() const { return RowBytes(type, cols); }
  bool panels() const { return layout == WeightLayout::kPanels; }
  // Rows as stored: rows, or whole panels.
  int64_t stored_rows() const { return panels() ? (rows + kPanelRows - 1) / kPanelRows * kPanelRows : rows; }
  size_t bytes() const { return size_t(stored_rows()) * row_bytes(); }
  // Row r's bytes. REQUIRES: layout kRows.
  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + size_t(r) * row_bytes(); }
  // Panel p's bytes (kPanelRows * row_bytes() of them). REQUIRES: layout kPanels.
  const uint8_t* panel(int64_t p) const { return row(p * kPanelRows); }
  // out[0..row_bytes()) = row r's bytes as a row-major matrix holds them, in either layout.
  void CopyRow(int64_t r, uint8_t* out) const;
  // out[0..cols) = row r as floats, in either layout (the embedding lookup, writers).
  void RowToFloat(int64_t r, float* out) const;
  bool empty() const { return data == nullptr; }
};

// Owns the bytes behind a model's WeightMatrix views: the mapped files and the converted tensors.
// Movable, not copyable.
class WeightStorage {
 public:
  WeightStorage() = default;
  WeightStorage(WeightStorage&&) = default;
  WeightStorage& operator=(WeightStorage&&) = default;

  // Keeps `file` mapped for the storage's life; returns it for building views into it.
  const MappedFile& Keep(MappedFile file);
  // `bytes` fresh, 64-byte-aligned bytes owned by the storage.
  uint8_t* Allocate(size_t bytes);
  // Frees bytes Allocate returned (an intermediate tensor that was placed again); others are ignored.
  void Free(const void* p);
  // Bytes of owned (converted) tensors; the mapped files are not counted.
  size_t owned_bytes() const { return owned_bytes_; }
  size_t mapped_bytes() const;
  // Drops the resident pages of [p, p + bytes) if it lies in one of the kept files (a tensor that
  // was copied and converted and will not be read from the map again).
  void Release(const void* p, size_t bytes) const;

 private:
  struct FreeAligned {
    void operator()(uint8_t* p) const;
  };
  std::vector<std::unique_ptr<MappedFile>> files_;  // stable addresses
  struct Owned {
    std::unique_ptr<uint8_t, FreeAligned> bytes;
    size_t size;
  };
  std::vector<Owned> owned_;
  size_t owned_bytes_ = 0;
};

// How a loader places one matrix found in a file (`source`: a view into a mapped file, any type).
struct PlaceOptions {
  std::optional<WeightType> wanted;  // nullopt: keep the file's type
  // If not empty, destination row r is source row row_order[r] (HF q/k rows to interleaved RoPE).
  std::vector<int64_t> row_order;
  // Hold the matrix in panels when it has at least kPanelRows rows (fewer: rows, as padding could
  // multiply its size by 16).
  bool panels = false;
};

// Returns the view the engine should use for `source` (row-major; a panels source is INVALID_ARGUMENT):
// `source` itself when it can be used in place (type kept, no reordering, rows asked for, aligned for
// its type), else an owned copy in `storage` -- in rows, or in panels when asked for and the matrix
// has kPanelRows rows or more -- converted a row at a time (never the whole tensor in fp32), in `wanted` or its
// FallbackType. A fallback is described in `*note` (e.g. "w2: rows of 172 weights are not a multiple
// of 32: kept as f16 instead of q8_0").
// The mapped source pages of a converted tensor are released (MappedFile::Release), so loading never
// holds a tensor twice. INVALID_ARGUMENT if source cols are not whole blocks or row_order is bad.
absl::StatusOr<WeightMatrix> PlaceMatrix(const WeightMatrix& source, const PlaceOptions& options,
                                         const std::string& name, WeightStorage* storage, std::string* note);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_MODEL_WEIGHTS_H_
