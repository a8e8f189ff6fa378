#include "worker/model/gguf.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace a2sf::worker::gguf {
namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr int kMaxArrayDepth = 4;   // nested arrays deeper than this are refused (stack safety)
constexpr uint32_t kMaxDims = 4;    // GGML_MAX_DIMS
constexpr uint64_t kMaxKeyBytes = 65535;
constexpr uint32_t kMaxAlignment = 1u << 20;

// Bytes each scalar type takes; 0 for strings and arrays.
size_t ScalarBytes(ValueType type) {
  switch (type) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    default:
      return 0;
  }
}

bool KnownValueType(uint32_t type) { return type <= uint32_t(ValueType::kFloat64); }
bool IsFloatType(ValueType type) { return type == ValueType::kFloat32 || type == ValueType::kFloat64; }
bool IsIntegerType(ValueType type) { return ScalarBytes(type) > 0 && type != ValueType::kBool && !IsFloatType(type); }

// The fewest bytes one encoded value of `type` can take (bounds array counts before reserving).
size_t MinValueBytes(ValueType type) {
  if (type == ValueType::kString) return 8;
  if (type == ValueType::kArray) return 12;
  return ScalarBytes(type);
}

}  // namespace

const char* ValueTypeName(ValueType type) {
  static const char* const kNames[] = {"uint8", "int8",  "uint16", "int16",  "uint32", "int32", "float32",
                                       "bool",  "string", "array", "uint64", "int64",  "float64"};
  return uint32_t(type) <= uint32_t(ValueType::kFloat64) ? kNames[uint32_t(type)] : "unknown";
}

Value Value::Uint32(uint32_t v) {
  Value out;
  out.type = ValueType::kUint32;
  out.integer = v;
  return out;
}
Value Value::Int32(int32_t v) {
  Value out;
  out.type = ValueType::kInt32;
  out.integer = v;
  return out;
}
Value Value::Float32(float v) {
  Value out;
  out.type = ValueType::kFloat32;
  out.real = v;
  return out;
}
Value Value::Bool(bool v) {
  Value out;
  out.type = ValueType::kBool;
  out.integer = v ? 1 : 0;
  return out;
}
Value Value::String(std::string v) {
  Value out;
  out.type = ValueType::kString;
  out.text = std::move(v);
  return out;
}
Value Value::Array(ValueType element_type, std::vector<Value> elements) {
  Value out;
  out.type = ValueType::kArray;
  out.element_type = element_type;
  out.elements = std::move(elements);
  return out;
}
bool Value::is_integer() const { return IsIntegerType(type); }
bool Value::is_float() const { return IsFloatType(type); }

std::string TensorTypeName(uint32_t type) {
  static const char* const kNames[] = {"f32",     "f16",    "q4_0",    "q4_1",  "q4_2",  "q4_3",   "q5_0",  "q5_1",
                                       "q8_0",    "q8_1",   "q2_K",    "q3_K",  "q4_K",  "q5_K",   "q6_K",  "q8_K",
                                       "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s", "iq2_s", "iq4_xs",
                                       "i8",      "i16",    "i32",     "i64",   "f64",   "iq1_m",  "bf16"};
  if (type < sizeof(kNames) / sizeof(kNames[0])) return kNames[type];
  return absl::StrCat("type ", type);
}

bool TensorTypeLayout(uint32_t type, uint64_t* block_elements, uint64_t* block_bytes) {
  switch (type) {
    case kF32:
      *block_elements = 1, *block_bytes = 4;
      return true;
    case kF16:
    case kBF16:
      *block_elements = 1, *block_bytes = 2;
      return true;
    case kQ8_0:
      *block_elements = 32, *block_bytes = 34;  // fp16 scale + 32 int8
      return true;
    case kQ4_0:
      *block_elements = 32, *block_bytes = 18;  // fp16 scale + 16 bytes of 4-bit values
      return true;
    default:
      return false;
  }
}

uint64_t TensorInfo::elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  return n;
}

// Reads the file front to back with a bounds check on every field.
class Parser {
 public:
  explicit Parser(GgufFile* out) : out_(out), data_(out->file_.data()), size_(out->file_.size()) {}

  absl::Status Parse() {
    if (size_ < 24 || std::memcmp(data_, kMagic, 4) != 0) {
      if (size_ >= 4 && std::memcmp(data_, kMagic, 4) == 0) return Truncated("the header");
      return Invalid("not a GGUF file (no 'GGUF' magic)");
    }
    offset_ = 4;
    uint32_t version = 0;
    uint64_t tensor_count = 0, kv_count = 0;
    Read(&version);
    if (version != 2 && version != 3) {
      return absl::UnimplementedError(
          absl::StrCat("'", out_->path(), "': GGUF version ", version, " is not supported (only 2 and 3)"));
    }
    out_->version_ = version;
    Read(&tensor_count);
    Read(&kv_count);
    // Every pair takes at least 8 + 4 + 1 bytes and every tensor descriptor 8 + 4 + 4 + 8.
    if (kv_count > Left() / 13) return Invalid(absl::StrCat("metadata count ", kv_count, " exceeds the file"));
    if (tensor_count > Left() / 24) return Invalid(absl::StrCat("tensor count ", tensor_count, " exceeds the file"));
    for (uint64_t i = 0; i < kv_count; ++i) {
      std::string key;
      if (absl::Status s = ReadString(&key, "a metadata key"); !s.ok()) return s;
      if (key.empty() || key.size() > kMaxKeyBytes) return Invalid(absl::StrCat("metadata key ", i, " is empty or too long"));
      Value value;
      if (absl::Status s = ReadValue(&value, key, 0); !s.ok()) return s;
      if (!out_->metadata_.emplace(key, std::move(value)).second) return Invalid(absl::StrCat("duplicate metadata key '", key, "'"));
    }
    if (absl::Status s = ReadAlignment(); !s.ok()) return s;
    for (uint64_t i = 0; i < tensor_count; ++i) {
      if (absl::Status s = ReadTensorInfo(); !s.ok()) return s;
    }
    return PlaceTensors();
  }

 private:
  uint64_t Left() const { return size_ - offset_; }
  template <typename T>
  bool Read(T* value) {
    if (Left() < sizeof(T)) return false;
    std::memcpy(value, data_ + offset_, sizeof(T));
    offset_ += sizeof(T);
    return true;
  }
  absl::Status Invalid(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat("'", out_->path(), "': ", what));
  }
  absl::Status Truncated(const std::string& what) const {
    return absl::DataLossError(
        absl::StrCat("'", out_->path(), "' is truncated: ", what, " runs past the end of the file at byte ", offset_));
  }
  absl::Status ReadString(std::string* out, const std::string& what) {
    uint64_t length = 0;
    if (!Read(&length) || length > Left()) return Truncated(what);
    out->assign(reinterpret_cast<const char*>(data_ + offset_), length);
    offset_ += length;
    return absl::OkStatus();
  }

  absl::Status ReadValue(Value* value, const std::string& key, int depth) {
    uint32_t type = 0;
    if (!Read(&type)) return Truncated(absl::StrCat("the type of '", key, "'"));
    if (!KnownValueType(type)) return Invalid(absl::StrCat("metadata '", key, "' has unknown value type ", type));
    return ReadValueOfType(ValueType(type), value, key, depth);
  }

  absl::Status ReadValueOfType(ValueType type, Value* value, const std::string& key, int depth) {
    value->type = type;
    const auto truncated = [&] { return Truncated(absl::StrCat("the value of '", key, "'")); };
    switch (type) {
      case ValueType::kString:
        return ReadString(&value->text, absl::StrCat("the value of '", key, "'"));
      case ValueType::kArray: {
        if (depth >= kMaxArrayDepth) return Invalid(absl::StrCat("metadata '", key, "' nests arrays too deeply"));
        uint32_t element_type = 0;
        uint64_t count = 0;
        if (!Read(&element_type) || !Read(&count)) return truncated();
        if (!KnownValueType(element_type)) {
          return Invalid(absl::StrCat("metadata '", key, "' is an array of unknown value type ", element_type));
        }
        value->element_type = ValueType(element_type);
        if (count > Left() / MinValueBytes(value->element_type)) {
          return Invalid(absl::StrCat("metadata '", key, "' claims ", count, " elements, more than the file holds"));
        }
        value->elements.resize(count);
        for (Value& element : value->elements) {
          if (absl::Status s = ReadValueOfType(value->element_type, &element, key, depth + 1); !s.ok()) return s;
        }
        return absl::OkStatus();
      }
      case ValueType::kBool: {
        uint8_t b = 0;
        if (!Read(&b)) return truncated();
        if (b > 1) return Invalid(absl::StrCat("metadata '", key, "' is a bool of value ", int(b)));
        value->integer = b;
        return absl::OkStatus();
      }
      case ValueType::kFloat32: {
        float f = 0;
        if (!Read(&f)) return truncated();
        value->real = f;
        return absl::OkStatus();
      }
      case ValueType::kFloat64:
        return Read(&value->real) ? absl::OkStatus() : truncated();
      default:
        return ReadInteger(type, value, key);
    }
  }

  template <typename T>
  bool ReadAs(int64_t* out) {
    T v = 0;
    if (!Read(&v)) return false;
    *out = int64_t(v);
    return true;
  }

  absl::Status ReadInteger(ValueType type, Value* value, const std::string& key) {
    bool ok = false;
    switch (type) {
      case ValueType::kUint8: ok = ReadAs<uint8_t>(&value->integer); break;
      case ValueType::kInt8: ok = ReadAs<int8_t>(&value->integer); break;
      case ValueType::kUint16: ok = ReadAs<uint16_t>(&value->integer); break;
      case ValueType::kInt16: ok = ReadAs<int16_t>(&value->integer); break;
      case ValueType::kUint32: ok = ReadAs<uint32_t>(&value->integer); break;
      case ValueType::kInt32: ok = ReadAs<int32_t>(&value->integer); break;
      case ValueType::kInt64: ok = ReadAs<int64_t>(&value->integer); break;
      case ValueType::kUint64: {
        uint64_t v = 0;
        ok = Read(&v);
        if (ok && v > uint64_t(std::numeric_limits<int64_t>::max())) {
          return Invalid(absl::StrCat("metadata '", key, "' = ", v, " is out of range"));
        }
        value->integer = int64_t(v);
        break;
      }
      default:
        break;
    }
    return ok ? absl::OkStatus() : Truncated(absl::StrCat("the value of '", key, "'"));
  }

  absl::Status ReadAlignment() {
    const Value* alignment = out_->Find("general.alignment");
    if (alignment == nullptr) return absl::OkStatus();
    if (!alignment->is_integer() || alignment->integer <= 0 || alignment->integer > kMaxAlignment ||
        (alignment->integer & (alignment->integer - 1)) != 0) {
      return Invalid("general.alignment must be a power of two up to 1 MiB");
    }
    out_->alignment_ = uint32_t(alignment->integer);
    return absl::OkStatus();
  }

  absl::Status ReadTensorInfo() {
    TensorInfo info;
    if (absl::Status s = ReadString(&info.name, "a tensor name"); !s.ok()) return s;
    uint32_t n_dims = 0;
    if (!Read(&n_dims)) return Truncated(absl::StrCat("tensor '", info.name, "'"));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return Invalid(absl::StrCat("tensor '", info.name, "' has ", n_dims, " dimensions (1 to 4 allowed)"));
    }
    info.dims.resize(n_dims);
    uint64_t elements = 1;
    for (uint64_t& d : info.dims) {
      if (!Read(&d)) return Truncated(absl::StrCat("tensor '", info.name, "'"));
      // Bounded so elements x bytes per element cannot overflow.
      if (d == 0 || d > (uint64_t(1) << 40) || elements > (uint64_t(1) << 40) / d) {
        return Invalid(absl::StrCat("tensor '", info.name, "' has a zero or absurd dimension (", d, ")"));
      }
      elements *= d;
    }
    if (!Read(&info.type) || !Read(&info.offset)) return Truncated(absl::StrCat("tensor '", info.name, "'"));
    uint64_t block_elements = 0, block_bytes = 0;
    if (TensorTypeLayout(info.type, &block_elements, &block_bytes)) {
      if (info.dims[0] % block_elements != 0) {
        return Invalid(absl::StrCat("tensor '", info.name, "' of type ", TensorTypeName(info.type), " has rows of ",
                                    info.dims[0], " values, not a multiple of ", block_elements));
      }
      info.bytes = elements / block_elements * block_bytes;
    }
    if (info.offset % out_->alignment_ != 0) {
      return Invalid(absl::StrCat("tensor '", info.name, "' starts at offset ", info.offset,
                                  ", not a multiple of the alignment ", out_->alignment_));
    }
    if (!out_->tensor_index_.emplace(info.name, out_->tensors_.size()).second) {
      return Invalid(absl::StrCat("duplicate tensor '", info.name, "'"));
    }
    out_->tensors_.push_back(std::move(info));
    return absl::OkStatus();
  }

  // The data starts at the next multiple of the alignment; every tensor must lie inside the file
  // and no two may overlap.
  absl::Status PlaceTensors() {
    const uint64_t align = out_->alignment_;
    const uint64_t data_start = (offset_ + align - 1) / align * align;
    if (data_start > size_) {
      if (out_->tensors_.empty()) return absl::OkStatus();
      return Truncated("the padding before the tensor data");
    }
    const uint64_t data_size = size_ - data_start;
    std::vector<const TensorInfo*> by_offset;
    for (TensorInfo& t : out_->tensors_) {
      if (t.offset > data_size || t.bytes > data_size - t.offset) {
        return absl::DataLossError(absl::StrCat("'", out_->path(), "' is truncated: tensor '", t.name, "' needs bytes ",
                                                t.offset, "..", t.offset + t.bytes, " of ", data_size, " bytes of data"));
      }
      t.data = data_ + data_start + t.offset;
      by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      if (by_offset[i - 1]->offset + by_offset[i - 1]->bytes > by_offset[i]->offset) {
        return Invalid(absl::StrCat("tensors '", by_offset[i - 1]->name, "' and '", by_offset[i]->name, "' overlap"));
      }
    }
    return absl::OkStatus();
  }

  GgufFile* out_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t offset_ = 0;
};

absl::StatusOr<GgufFile> GgufFile::Open(const std::string& path) {
  absl::StatusOr<MappedFile> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  GgufFile out;
  out.path_ = file->path();
  out.file_ = std::move(*file);
  if (absl::Status s = Parser(&out).Parse(); !s.ok()) return s;
  return out;
}

bool GgufFile::HasMagic(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char magic[4] = {};
  const bool ok = std::fread(magic, 1, 4, f) == 4 && std::memcmp(magic, kMagic, 4) == 0;
  std::fclose(f);
  return ok;
}

const Value* GgufFile::Find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const TensorInfo* GgufFile::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

absl::Status Missing(const std::string& path, const std::string& key) {
  return absl::NotFoundError(absl::StrCat("'", path, "': metadata '", key, "' is missing"));
}
absl::Status WrongType(const std::string& path, const std::string& key, const Value& v, const char* want) {
  return absl::InvalidArgumentError(
      absl::StrCat("'", path, "': metadata '", key, "' is ", ValueTypeName(v.type), ", expected ", want));
}

}  // namespace

absl::StatusOr<int64_t> GgufFile::GetInteger(const std::string& key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(path(), key);
  if (!v->is_integer()) return WrongType(path(), key, *v, "an integer");
  return v->integer;
}

absl::StatusOr<double> GgufFile::GetFloat(const std::string& key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(path(), key);
  if (!v->is_float()) return WrongType(path(), key, *v, "a float");
  return v->real;
}

absl::StatusOr<std::string> GgufFile::GetString(const std::string& key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(path(), key);
  if (v->type != ValueType::kString) return WrongType(path(), key, *v, "a string");
  return v->text;
}

absl::StatusOr<bool> GgufFile::GetBool(const std::string& key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(path(), key);
  if (v->type != ValueType::kBool) return WrongType(path(), key, *v, "a bool");
  return v->integer != 0;
}

absl::StatusOr<const std::vector<Value>*> GgufFile::GetArray(const std::string& key, ValueType element_type) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(path(), key);
  const bool ok = v->type == ValueType::kArray &&
                  (IsIntegerType(element_type) ? IsIntegerType(v->element_type)
                   : IsFloatType(element_type) ? IsFloatType(v->element_type)
                                               : v->element_type == element_type);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("'", path(), "': metadata '", key, "' is not an array of ",
                                                   ValueTypeName(element_type)));
  }
  return &v->elements;
}

// --- Writing ---------------------------------------------------------------------------------------

namespace {

class FileSink {
 public:
  explicit FileSink(std::FILE* f) : f_(f) {}
  template <typename T>
  void Put(T value) {
    Bytes(&value, sizeof(T));
  }
  void Bytes(const void* data, size_t n) { ok_ = ok_ && (n == 0 || std::fwrite(data, 1, n, f_) == n); }
  void String(const std::string& s) {
    Put<uint64_t>(s.size());
    Bytes(s.data(), s.size());
  }
  void Pad(uint64_t to, uint64_t* position) {
    static const char kZeros[64] = {};
    uint64_t n = (to - *position % to) % to;
    *position += n;
    while (n > 0) {
      const uint64_t k = std::min<uint64_t>(n, sizeof(kZeros));
      Bytes(kZeros, k);
      n -= k;
    }
  }
  bool ok() const { return ok_; }

  void ValueBody(const Value& v) {
    switch (v.type) {
      case ValueType::kString:
        String(v.text);
        return;
      case ValueType::kArray:
        Put<uint32_t>(uint32_t(v.element_type));
        Put<uint64_t>(v.elements.size());
        for (const Value& e : v.elements) ValueBody(e);
        return;
      case ValueType::kFloat32:
        Put<float>(float(v.real));
        return;
      case ValueType::kFloat64:
        Put<double>(v.real);
        return;
      default: {
        // Integers and bools: the low bytes of the two's-complement value, little-endian.
        const uint64_t bits = uint64_t(v.integer);
        Bytes(&bits, ScalarBytes(v.type));
      }
    }
  }

 private:
  std::FILE* f_;
  bool ok_ = true;
};

// Bytes ValueBody writes, to place the tensor data without a second pass.
uint64_t EncodedSize(const Value& v) {
  if (v.type == ValueType::kString) return 8 + v.text.size();
  if (v.type != ValueType::kArray) return ScalarBytes(v.type);
  uint64_t n = 12;
  for (const Value& e : v.elements) n += EncodedSize(e);
  return n;
}

}  // namespace

void GgufWriter::Set(const std::string& key, Value value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

absl::Status GgufWriter::AddTensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type,
                                   Producer producer) {
  uint64_t block_elements = 0, block_bytes = 0;
  if (!TensorTypeLayout(type, &block_elements, &block_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF writer: tensor type ", TensorTypeName(type), " is not supported"));
  }
  if (dims.empty() || dims.size() > kMaxDims || dims[0] % block_elements != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF writer: tensor '", name, "' has a shape unfit for ",
                                                   TensorTypeName(type)));
  }
  for (const PendingTensor& t : tensors_) {
    if (t.info.name == name) return absl::InvalidArgumentError(absl::StrCat("GGUF writer: duplicate tensor '", name, "'"));
  }
  PendingTensor t;
  t.info.name = name;
  t.info.dims = std::move(dims);
  t.info.type = type;
  t.info.bytes = t.info.elements() / block_elements * block_bytes;
  t.producer = std::move(producer);
  tensors_.push_back(std::move(t));
  return absl::OkStatus();
}

absl::Status GgufWriter::Write(const std::string& path) const {
  uint64_t alignment = kDefaultAlignment;
  for (const auto& [key, value] : metadata_) {
    if (key == "general.alignment") alignment = uint64_t(value.integer);
  }
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    return absl::InvalidArgumentError("GGUF writer: general.alignment must be a power of two");
  }
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot write '", path, "'"));
  FileSink out(f);
  uint64_t position = 24;
  out.Bytes(kMagic, 4);
  out.Put<uint32_t>(3);
  out.Put<uint64_t>(tensors_.size());
  out.Put<uint64_t>(metadata_.size());
  for (const auto& [key, value] : metadata_) {
    out.String(key);
    out.Put<uint32_t>(uint32_t(value.type));
    out.ValueBody(value);
    position += 8 + key.size() + 4 + EncodedSize(value);
  }
  uint64_t data_offset = 0;
  for (const PendingTensor& t : tensors_) {
    out.String(t.info.name);
    out.Put<uint32_t>(uint32_t(t.info.dims.size()));
    for (uint64_t d : t.info.dims) out.Put<uint64_t>(d);
    out.Put<uint32_t>(t.info.type);
    out.Put<uint64_t>(data_offset);
    position += 8 + t.info.name.size() + 4 + 8 * t.info.dims.size() + 4 + 8;
    data_offset = (data_offset + t.info.bytes + alignment - 1) / alignment * alignment;
  }
  out.Pad(alignment, &position);
  absl::Status status;
  std::vector<uint8_t> bytes;
  for (const PendingTensor& t : tensors_) {
    bytes.clear();
    status = t.producer(&bytes);
    if (status.ok() && bytes.size() != t.info.bytes) {
      status = absl::InternalError(absl::StrCat("GGUF writer: tensor '", t.info.name, "' produced ", bytes.size(),
                                                " bytes, expected ", t.info.bytes));
    }
    if (!status.ok()) break;
    out.Bytes(bytes.data(), bytes.size());
    position += bytes.size();
    out.Pad(alignment, &position);
  }
  const bool closed = std::fclose(f) == 0;
  if (!status.ok()) return status;
  if (!out.ok() || !closed) return absl::DataLossError(absl::StrCat("error writing '", path, "' (disk full?)"));
  return absl::OkStatus();
}

}  // namespace a2sf::worker::gguf
