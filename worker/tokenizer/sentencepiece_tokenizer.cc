// sentencepiece's tokenizer.model (what Meta's LLaMA-2 ships), through Debian's libsentencepiece.
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/tokenizer/sentencepiece_model.h"
#include "worker/model/gguf.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/vocabulary.h"

namespace a2sf::worker {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::unique_ptr<SentencePieceModel> processor)
      : processor_(std::move(processor)) {}
  const char* kind() const override { return "sentencepiece"; }
  int vocab_size() const override { return processor_->piece_size(); }
  int bos_id() const override { return processor_->bos_id(); }
  int eos_id() const override { return processor_->eos_id(); }

  absl::StatusOr<std::vector<int>> Encode(const std::string& text, bool add_bos) const override {
    if (!IsValidUtf8(text)) return absl::InvalidArgumentError("prompt: not valid UTF-8");
    std::vector<int> ids;
    if (add_bos && bos_id() >= 0) ids.push_back(bos_id());
    std::vector<int> pieces;
    std::string error;
    if (!processor_->Encode(text, &pieces, &error)) return absl::InternalError(absl::StrCat("sentencepiece: ", error));
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    return ids;
  }

  std::string DecodePiece(int previous, int token) const override {
    if (token < 0 || token >= vocab_size() || processor_->IsControl(token)) return "";
    if (processor_->IsByte(token)) {
      // Byte pieces are named "<0xAB>".
      const std::string piece = processor_->IdToPiece(token);
      return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    }
    std::string piece = processor_->IdToPiece(token);
    // U+2581 (lower one-eighth block) stands for a space.
    std::string out;
    for (size_t i = 0; i < piece.size();) {
      if (piece.compare(i, 3, "\xE2\x96\x81") == 0) {
        out += ' ';
        i += 3;
      } else {
        out += piece[i++];
      }
    }
    if ((previous == bos_id() || previous < 0) && absl::StartsWith(out, " ")) out.erase(0, 1);
    return out;
  }

 private:
  std::unique_ptr<SentencePieceModel> processor_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path) {
  std::string error;
  std::unique_ptr<SentencePieceModel> processor = SentencePieceModel::Load(path, &error);
  if (processor == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': not a sentencepiece model: ", error));
  }
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(processor)));
}

// Pieces, scores and types as the model holds them. Assumes LLaMA's settings (a dummy prefix, no
// normalization); a model trained otherwise still loads here but VocabularyTokenizer would not
// reproduce its normalization.
absl::StatusOr<Vocabulary> ReadSentencePieceVocabulary(const std::string& path) {
  std::string error;
  std::unique_ptr<SentencePieceModel> model = SentencePieceModel::Load(path, &error);
  if (model == nullptr) return absl::InvalidArgumentError(absl::StrCat("'", path, "': not a sentencepiece model: ", error));
  Vocabulary v;
  v.kind = "sentencepiece";
  for (int id = 0; id < model->piece_size(); ++id) {
    v.pieces.push_back(model->IdToPiece(id));
    v.scores.push_back(model->GetScore(id));
    v.types.push_back(model->IsControl(id)   ? TokenType::kControl
                      : model->IsByte(id)    ? TokenType::kByte
                      : model->IsUnknown(id) ? TokenType::kUnknown
                      : model->IsUnused(id)  ? TokenType::kUnused
                                             : TokenType::kNormal);
    if (model->IsUnknown(id)) v.unknown_id = id;
  }
  v.bos_id = model->bos_id();
  v.eos_id = model->eos_id();
  if (absl::Status s = ValidateVocabulary(v); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", s.message()));
  return v;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  if (gguf::GgufFile::HasMagic(path)) {
    absl::StatusOr<Vocabulary> v = ReadVocabulary(path);
    if (!v.ok()) return v.status();
    return MakeVocabularyTokenizer(std::move(*v));
  }
  if (absl::EndsWith(path, ".model")) return LoadSentencePieceTokenizer(path);
  return LoadLlama2cTokenizer(path, 0);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerForModel(const std::string& model_path,
                                                                 const std::string& tokenizer_path) {
  if (!tokenizer_path.empty()) return LoadTokenizer(tokenizer_path);
  if (!gguf::GgufFile::HasMagic(model_path)) return std::unique_ptr<Tokenizer>();
  absl::StatusOr<std::unique_ptr<Tokenizer>> own = LoadTokenizer(model_path);
  if (own.status().code() == absl::StatusCode::kNotFound) return std::unique_ptr<Tokenizer>();  // none in the file
  return own;
}

}  // namespace a2sf::worker
