// llama2.c's tokenizer.bin: int32 max_token_length, then per id: fp32 score, int32 length, bytes.
// Encoding follows run.c exactly (BOS, a dummy-prefix " ", one token per code point with byte
// fallback, then greedy merges of the adjacent pair with the highest score, leftmost on ties), so ids
// match the fixtures' goldens.
#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "worker/tokenizer/tokenizer.h"

namespace a2sf::worker {
namespace {

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(std::vector<std::string> vocab, std::vector<float> scores)
      : vocab_(std::move(vocab)), scores_(std::move(scores)) {
    for (size_t i = 0; i < vocab_.size(); ++i) lookup_.emplace(vocab_[i], static_cast<int>(i));
  }
  const char* kind() const override { return "llama2.c"; }
  int vocab_size() const override { return static_cast<int>(vocab_.size()); }
  int bos_id() const override { return 1; }
  int eos_id() const override { return 2; }

  absl::StatusOr<std::vector<int>> Encode(const std::string& text, bool add_bos) const override {
    if (!IsValidUtf8(text)) return absl::InvalidArgumentError("prompt: not valid UTF-8");
    std::vector<int> tokens;
    if (add_bos) tokens.push_back(bos_id());
    std::vector<int> pieces;
    if (!text.empty()) {
      const int space = Find(" ");
      if (space < 0) return absl::FailedPreconditionError("tokenizer has no \" \" piece for the dummy prefix");
      pieces.push_back(space);
    }
    for (size_t i = 0; i < text.size();) {
      size_t len = 1;
      while (i + len < text.size() && (static_cast<uint8_t>(text[i + len]) & 0xC0) == 0x80 && len < 4) ++len;
      const int id = Find(text.substr(i, len));
      if (id >= 0) {
        pieces.push_back(id);
      } else {
        for (size_t k = 0; k < len; ++k) pieces.push_back(static_cast<uint8_t>(text[i + k]) + 3);
      }
      i += len;
    }
    for (;;) {
      float best_score = -1e10f;
      int best_id = -1;
      size_t best_index = 0;
      for (size_t i = 0; i + 1 < pieces.size(); ++i) {
        const int id = Find(vocab_[pieces[i]] + vocab_[pieces[i + 1]]);
        if (id >= 0 && scores_[id] > best_score) {
          best_score = scores_[id];
          best_id = id;
          best_index = i;
        }
      }
      if (best_id < 0) break;
      pieces[best_index] = best_id;
      pieces.erase(pieces.begin() + best_index + 1);
    }
    tokens.insert(tokens.end(), pieces.begin(), pieces.end());
    return tokens;
  }

  std::string DecodePiece(int previous, int token) const override {
    if (token < 0 || token >= vocab_size()) return "";
    std::string piece = vocab_[token];
    if (previous == bos_id() && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    unsigned int byte = 0;
    if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%02X>", &byte) == 1) return std::string(1, char(byte));
    return piece;
  }

 private:
  int Find(const std::string& piece) const {
    auto it = lookup_.find(piece);
    return it == lookup_.end() ? -1 : it->second;
  }
  std::vector<std::string> vocab_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> lookup_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& path, int vocab_size) {
  absl::StatusOr<std::string> data = ReadFileToString(path);
  if (!data.ok()) return data.status();
  size_t offset = 0;
  auto read = [&](void* out, size_t bytes) {
    if (data->size() - offset < bytes) return false;
    std::memcpy(out, data->data() + offset, bytes);
    offset += bytes;
    return true;
  };
  int32_t max_len = 0;
  if (!read(&max_len, 4) || max_len <= 0 || max_len > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': not a llama2.c tokenizer (bad max_token_length)"));
  }
  std::vector<std::string> vocab;
  std::vector<float> scores;
  while (offset < data->size() && (vocab_size <= 0 || static_cast<int>(vocab.size()) < vocab_size)) {
    float score;
    int32_t len;
    if (!read(&score, 4) || !read(&len, 4) || len < 0 || len > max_len || data->size() - offset < size_t(len)) {
      return absl::DataLossError(absl::StrCat("'", path, "': truncated or corrupt at entry ", vocab.size()));
    }
    vocab.emplace_back(data->data() + offset, len);
    offset += len;
    scores.push_back(score);
  }
  if (vocab_size > 0 && static_cast<int>(vocab.size()) != vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': has ", vocab.size(), " tokens, the model expects ",
                                                   vocab_size));
  }
  if (vocab.size() < 259) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", vocab.size(),
                                                   " tokens is too few (ids 3..258 must be the byte tokens)"));
  }
  return std::unique_ptr<Tokenizer>(new Llama2cTokenizer(std::move(vocab), std::move(scores)));
}

}  // namespace a2sf::worker
