// A Vocabulary to and from a GGUF file's tokenizer.ggml.* metadata, as llama.cpp writes it for
// LLaMA's sentencepiece vocabulary (tokenizer.ggml.model = "llama").
#include "absl/strings/str_cat.h"
#include "worker/model/gguf.h"
#include "worker/tokenizer/vocabulary.h"

namespace a2sf::worker {
namespace {

constexpr char kModel[] = "tokenizer.ggml.model";
constexpr char kTokens[] = "tokenizer.ggml.tokens";
constexpr char kScores[] = "tokenizer.ggml.scores";
constexpr char kTypes[] = "tokenizer.ggml.token_type";
constexpr char kBos[] = "tokenizer.ggml.bos_token_id";
constexpr char kEos[] = "tokenizer.ggml.eos_token_id";
constexpr char kUnknown[] = "tokenizer.ggml.unknown_token_id";
constexpr char kAddBos[] = "tokenizer.ggml.add_bos_token";
constexpr char kAddSpacePrefix[] = "tokenizer.ggml.add_space_prefix";

// An optional integer or bool key: `fallback` when absent, the error when it has a wrong type.
absl::Status ReadOptionalId(const gguf::GgufFile& file, const char* key, int* out) {
  if (file.Find(key) == nullptr) return absl::OkStatus();
  absl::StatusOr<int64_t> v = file.GetInteger(key);
  if (!v.ok()) return v.status();
  if (*v < 0 || *v > (int64_t(1) << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("'", file.path(), "': ", key, " = ", *v, " is out of range"));
  }
  *out = int(*v);
  return absl::OkStatus();
}
absl::Status ReadOptionalBool(const gguf::GgufFile& file, const char* key, bool* out) {
  if (file.Find(key) == nullptr) return absl::OkStatus();
  absl::StatusOr<bool> v = file.GetBool(key);
  if (!v.ok()) return v.status();
  *out = *v;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Vocabulary> VocabularyFromGguf(const gguf::GgufFile& file) {
  absl::StatusOr<std::string> model = file.GetString(kModel);
  if (!model.ok()) return model.status();
  if (*model != "llama") {
    return absl::InvalidArgumentError(absl::StrCat("'", file.path(), "': tokenizer model '", *model,
                                                   "' is not supported (only 'llama', sentencepiece BPE)"));
  }
  absl::StatusOr<const std::vector<gguf::Value>*> tokens = file.GetArray(kTokens, gguf::ValueType::kString);
  if (!tokens.ok()) return tokens.status();
  absl::StatusOr<const std::vector<gguf::Value>*> scores = file.GetArray(kScores, gguf::ValueType::kFloat32);
  if (!scores.ok()) return scores.status();
  absl::StatusOr<const std::vector<gguf::Value>*> types = file.GetArray(kTypes, gguf::ValueType::kInt32);
  if (!types.ok()) return types.status();
  Vocabulary v;
  v.kind = "gguf";
  for (const gguf::Value& t : **tokens) v.pieces.push_back(t.text);
  for (const gguf::Value& s : **scores) v.scores.push_back(float(s.real));
  for (const gguf::Value& t : **types) {
    if (t.integer < 0 || t.integer > int64_t(TokenType::kByte)) {
      return absl::InvalidArgumentError(absl::StrCat("'", file.path(), "': ", kTypes, " holds unknown type ", t.integer));
    }
    v.types.push_back(TokenType(t.integer));
  }
  for (const auto& [key, field] : {std::pair<const char*, int*>{kBos, &v.bos_id}, {kEos, &v.eos_id}, {kUnknown, &v.unknown_id}}) {
    if (absl::Status s = ReadOptionalId(file, key, field); !s.ok()) return s;
  }
  if (absl::Status s = ReadOptionalBool(file, kAddBos, &v.add_bos); !s.ok()) return s;
  if (absl::Status s = ReadOptionalBool(file, kAddSpacePrefix, &v.add_space_prefix); !s.ok()) return s;
  if (absl::Status s = ValidateVocabulary(v); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("'", file.path(), "': ", s.message()));
  }
  return v;
}

void AddVocabularyToGguf(const Vocabulary& v, gguf::GgufWriter* writer) {
  std::vector<gguf::Value> tokens, scores, types;
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    tokens.push_back(gguf::Value::String(v.pieces[i]));
    scores.push_back(gguf::Value::Float32(v.scores[i]));
    types.push_back(gguf::Value::Int32(int32_t(v.types[i])));
  }
  writer->Set(kModel, gguf::Value::String("llama"));
  writer->Set(kTokens, gguf::Value::Array(gguf::ValueType::kString, std::move(tokens)));
  writer->Set(kScores, gguf::Value::Array(gguf::ValueType::kFloat32, std::move(scores)));
  writer->Set(kTypes, gguf::Value::Array(gguf::ValueType::kInt32, std::move(types)));
  writer->Set(kBos, gguf::Value::Uint32(uint32_t(v.bos_id)));
  writer->Set(kEos, gguf::Value::Uint32(uint32_t(v.eos_id)));
  writer->Set(kUnknown, gguf::Value::Uint32(uint32_t(v.unknown_id)));
  writer->Set(kAddBos, gguf::Value::Bool(v.add_bos));
  writer->Set(kAddSpacePrefix, gguf::Value::Bool(v.add_space_prefix));
}

}  // namespace a2sf::worker
