// sentencepiece's tokenizer.model (what Meta's LLaMA-2 ships), through Debian's libsentencepiece.
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/tokenizer/sentencepiece_model.h"
#include "worker/tokenizer/tokenizer.h"

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

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  if (absl::EndsWith(path, ".model")) return LoadSentencePieceTokenizer(path);
  return LoadLlama2cTokenizer(path, 0);
}

}  // namespace a2sf::worker
