// GGUF, llama.cpp's single-file model format (versions 2 and 3, little-endian): a header, typed
// metadata key/value pairs, tensor descriptors and aligned tensor data. This is the container only:
// GgufFile parses and validates a file's structure and hands out its metadata and the bytes of each
// tensor in place (the file stays memory-mapped); GgufWriter writes one, streaming tensor data so a
// model larger than memory can be written. What the keys and tensors mean for a LLaMA model is in
// gguf_model.cc (weights) and the tokenizer library (tokenizer.ggml.*).
//
// Layout (all integers little-endian):
//   "GGUF" | uint32 version | uint64 tensor_count | uint64 kv_count
//   kv_count x (string key | uint32 value_type | value)
//   tensor_count x (string name | uint32 n_dims | uint64 dims[n_dims] | uint32 ggml_type | uint64 offset)
//   zero padding to `general.alignment` (default 32) | tensor data
// A string is uint64 length + bytes; an array is uint32 element type + uint64 count + elements.
// dims[0] is the contiguous dimension: a [rows][cols] matrix is stored with dims {cols, rows}.
// Each tensor's offset is relative to the start of the data and a multiple of the alignment.
//
// Thread-safety: a parsed GgufFile is immutable and safe to share; GgufWriter is not thread-safe.
#ifndef A2SF_WORKER_MODEL_GGUF_H_
#define A2SF_WORKER_MODEL_GGUF_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"

namespace a2sf::worker::gguf {

inline constexpr uint32_t kDefaultAlignment = 32;

enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* ValueTypeName(ValueType type);

// One metadata value. Integers of every width are held in `integer` (unsigned 64-bit values above
// INT64_MAX are refused on read), floats in `real`, bools as 0/1 in `integer`.
struct Value {
  ValueType type = ValueType::kUint32;
  int64_t integer = 0;
  double real = 0;
  std::string text;
  ValueType element_type = ValueType::kUint32;  // arrays
  std::vector<Value> elements;                  // arrays

  static Value Uint32(uint32_t v);
  static Value Int32(int32_t v);
  static Value Float32(float v);
  static Value Bool(bool v);
  static Value String(std::string v);
  static Value Array(ValueType element_type, std::vector<Value> elements);
  bool is_integer() const;
  bool is_float() const;
};

// ggml tensor type ids as they appear in files. Only some are known to the engine (gguf_model.cc);
// TensorTypeName names every id ggml has defined, so errors can say what a file holds.
enum TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ8_0 = 8,
  kBF16 = 30,
};
// "q4_K", "bf16", ... or "type N" for ids ggml never defined.
std::string TensorTypeName(uint32_t type);
// Elements per block and bytes per block for the types whose layout this reader knows (f32, f16,
// bf16, q8_0, q4_0); false for the others.
bool TensorTypeLayout(uint32_t type, uint64_t* block_elements, uint64_t* block_bytes);

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // dims[0] contiguous
  uint32_t type = 0;
  uint64_t offset = 0;           // from the start of the tensor data
  const uint8_t* data = nullptr;  // in the mapped file
  uint64_t bytes = 0;             // 0 when the type's layout is unknown
  uint64_t elements() const;
};

class GgufFile {
 public:
  // Maps and parses `path`. NOT_FOUND for a missing file; INVALID_ARGUMENT (not GGUF, unsupported
  // version, bad alignment, duplicate keys or tensors, absurd counts or dims, misaligned offsets);
  // DATA_LOSS (truncated: a field or a tensor's data runs past the end of the file). Every message
  // names the file.
  static absl::StatusOr<GgufFile> Open(const std::string& path);
  // True if the first bytes of `path` are the GGUF magic.
  static bool HasMagic(const std::string& path);

  const std::string& path() const { return path_; }  // also after TakeMapping, for messages
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::map<std::string, Value>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // Null when absent.
  const Value* Find(const std::string& key) const;
  const TensorInfo* FindTensor(const std::string& name) const;

  // Typed metadata reads: NOT_FOUND naming the key when absent, INVALID_ARGUMENT when the value has
  // another type or (for integers) does not fit.
  absl::StatusOr<int64_t> GetInteger(const std::string& key) const;
  absl::StatusOr<double> GetFloat(const std::string& key) const;
  absl::StatusOr<std::string> GetString(const std::string& key) const;
  absl::StatusOr<bool> GetBool(const std::string& key) const;
  // An array whose elements are all of `element_type` (any integer type when `element_type` is
  // an integer type, either float type for floats).
  absl::StatusOr<const std::vector<Value>*> GetArray(const std::string& key, ValueType element_type) const;

  // Moves the mapping out (the tensors' `data` pointers stay valid while it lives).
  MappedFile TakeMapping() { return std::move(file_); }

 private:
  MappedFile file_;
  std::string path_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  std::map<std::string, Value> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
  friend class Parser;
};

// Writes a GGUF version 3 file: metadata in the order set, then tensors in the order added.
class GgufWriter {
 public:
  // Fills `out` with exactly the tensor's bytes (called once, when the writer reaches the tensor).
  using Producer = std::function<absl::Status(std::vector<uint8_t>* out)>;

  void Set(const std::string& key, Value value);
  // `dims` as in the file (dims[0] contiguous); `type` must have a known layout.
  absl::Status AddTensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, Producer producer);
  // Writes everything to `path` (the alignment is `general.alignment` if set, else 32).
  absl::Status Write(const std::string& path) const;

 private:
  struct PendingTensor {
    TensorInfo info;
    Producer producer;
  };
  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace a2sf::worker::gguf

#endif  // A2SF_WORKER_MODEL_GGUF_H_
