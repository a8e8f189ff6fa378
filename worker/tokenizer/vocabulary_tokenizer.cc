// VocabularyTokenizer (the rules are in vocabulary.h) and the llama2.c tokenizer.bin reader.
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <queue>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/files.h"
#include "worker/model/gguf.h"
#include "worker/tokenizer/vocabulary.h"

namespace a2sf::worker {
namespace {

constexpr char kSpaceMark[] = "\xE2\x96\x81";  // U+2581

// 0..255 for a "<0xAB>" piece, -1 otherwise.
int BytePieceValue(const std::string& piece) {
  unsigned int byte = 0;
  char tail = 0;
  if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%2X%c", &byte, &tail) == 2 && tail == '>') return int(byte);
  return -1;
}

bool Mergeable(TokenType type) {
  return type == TokenType::kNormal || type == TokenType::kUserDefined || type == TokenType::kUndefined;
}

class VocabularyTokenizer final : public Tokenizer {
 public:
  explicit VocabularyTokenizer(Vocabulary vocabulary) : v_(std::move(vocabulary)) {
    byte_ids_.fill(-1);
    for (size_t i = 0; i < v_.pieces.size(); ++i) {
      if (v_.types[i] == TokenType::kByte) {
        const int byte = BytePieceValue(v_.pieces[i]);
        if (byte >= 0 && byte_ids_[byte] < 0) byte_ids_[byte] = int(i);
      } else if (Mergeable(v_.types[i])) {
        lookup_.emplace(v_.pieces[i], int(i));  // the first of duplicate pieces wins
      }
    }
  }
  const char* kind() const override { return v_.kind.c_str(); }
  int vocab_size() const override { return int(v_.pieces.size()); }
  int bos_id() const override { return v_.bos_id; }
  int eos_id() const override { return v_.eos_id; }

  absl::StatusOr<std::vector<int>> Encode(const std::string& text, bool add_bos) const override {
    if (!IsValidUtf8(text)) return absl::InvalidArgumentError("prompt: not valid UTF-8");
    std::vector<int> ids;
    if (add_bos && v_.add_bos) ids.push_back(v_.bos_id);
    if (text.empty()) return ids;
    const std::string escaped = (v_.add_space_prefix ? kSpaceMark : "") + absl::StrReplaceAll(text, {{" ", kSpaceMark}});
    std::vector<Symbol> symbols;
    for (size_t i = 0; i < escaped.size();) {
      size_t len = 1;
      while (i + len < escaped.size() && (uint8_t(escaped[i + len]) & 0xC0) == 0x80) ++len;
      const int id = Find(escaped.substr(i, len));
      if (id >= 0) {
        symbols.push_back({id, true});
      } else {
        for (size_t k = 0; k < len; ++k) {
          const int byte_id = byte_ids_[uint8_t(escaped[i + k])];
          symbols.push_back({byte_id >= 0 ? byte_id : v_.unknown_id, false});
        }
      }
      i += len;
    }
    Merge(&symbols);
    for (const Symbol& s : symbols) {
      if (s.id >= 0) ids.push_back(s.id);
    }
    return ids;
  }

  std::string DecodePiece(int previous, int token) const override {
    if (token < 0 || token >= vocab_size() || v_.types[token] == TokenType::kControl) return "";
    if (v_.types[token] == TokenType::kByte) {
      const int byte = BytePieceValue(v_.pieces[token]);
      return byte >= 0 ? std::string(1, char(byte)) : "";
    }
    std::string piece = absl::StrReplaceAll(v_.pieces[token], {{kSpaceMark, " "}});
    if ((previous == v_.bos_id || previous < 0) && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    return piece;
  }

 private:
  // A piece id, or a byte token (which never merges); -1 once merged into the symbol on its left.
  struct Symbol {
    int id;
    bool mergeable;
  };

  // Merges adjacent symbols while any pair is a piece: each time the pair of the highest score, the
  // leftmost of equal ones (llama2.c's and sentencepiece's BPE rule). Each merge rescans only the two
  // pairs it changed: candidates wait in a heap and are checked when taken, so a prompt of n symbols
  // costs O(n log n), not the O(n^2) of rescanning every pair per merge (a 32 KB prompt: seconds).
  // Scores are never NaN (ValidateVocabulary).
  void Merge(std::vector<Symbol>* symbols) const {
    std::vector<Symbol>& s = *symbols;
    const size_t n = s.size();
    std::vector<size_t> next(n), prev(n);
    for (size_t i = 0; i < n; ++i) next[i] = i + 1, prev[i] = i - 1;  // prev[0] wraps: never read
    struct Candidate {  // the pair at `left` and its next symbol, as they were when offered
      float score;
      size_t left;
      int left_id, right_id, merged;
    };
    auto after = [](const Candidate& a, const Candidate& b) {  // b is taken before a
      return a.score != b.score ? a.score < b.score : a.left > b.left;
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(after)> heap(after);
    auto offer = [&](size_t left) {
      if (left >= n || next[left] >= n) return;
      const size_t right = next[left];
      if (!s[left].mergeable || !s[right].mergeable) return;
      const int id = Find(v_.pieces[s[left].id] + v_.pieces[s[right].id]);
      if (id >= 0) heap.push({v_.scores[id], left, s[left].id, s[right].id, id});
    };
    for (size_t i = 0; i + 1 < n; ++i) offer(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      // Stale: a side merged since the pair was offered (a symbol's next changes only when its id
      // does, so an unchanged left id means the same right neighbour).
      const size_t right = next[c.left];
      if (s[c.left].id != c.left_id || right >= n || s[right].id != c.right_id) continue;
      s[c.left].id = c.merged;
      s[right].id = -1;
      next[c.left] = next[right];
      if (next[right] < n) prev[next[right]] = c.left;
      if (c.left > 0) offer(prev[c.left]);
      offer(c.left);
    }
  }

  int Find(const std::string& piece) const {
    auto it = lookup_.find(piece);
    return it == lookup_.end() ? -1 : it->second;
  }
  Vocabulary v_;
  std::unordered_map<std::string, int> lookup_;
  std::array<int, 256> byte_ids_;
};

}  // namespace

absl::Status ValidateVocabulary(const Vocabulary& v) {
  const size_t n = v.pieces.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer vocabulary is empty");
  if (v.scores.size() != n || v.types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer vocabulary: ", n, " pieces but ", v.scores.size(),
                                                   " scores and ", v.types.size(), " token types"));
  }
  for (const auto& [name, id] : {std::pair<const char*, int>{"bos", v.bos_id}, {"eos", v.eos_id}, {"unknown", v.unknown_id}}) {
    if (id < 0 || size_t(id) >= n) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer vocabulary: ", name, " id ", id, " is out of range"));
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(v.scores[i])) {  // merges are ordered by score: NaN has no place in that order
      return absl::InvalidArgumentError(absl::StrCat("tokenizer vocabulary: token ", i, " has a NaN score"));
    }
    if (int32_t(v.types[i]) < 0 || int32_t(v.types[i]) > int32_t(TokenType::kByte)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer vocabulary: token ", i, " has unknown type ",
                                                     int32_t(v.types[i])));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeVocabularyTokenizer(Vocabulary vocabulary) {
  if (absl::Status s = ValidateVocabulary(vocabulary); !s.ok()) return s;
  return std::unique_ptr<Tokenizer>(new VocabularyTokenizer(std::move(vocabulary)));
}

// llama2.c's tokenizer.bin: int32 max_token_length, then per id: fp32 score, int32 length, bytes.
// Pieces hold real spaces; ids 0, 1, 2 are <unk>, BOS and EOS; "<0xAB>" pieces are the bytes.
absl::StatusOr<Vocabulary> ReadLlama2cVocabulary(const std::string& path, int vocab_size) {
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
  Vocabulary v;
  while (offset < data->size() && (vocab_size <= 0 || int(v.pieces.size()) < vocab_size)) {
    float score;
    int32_t len;
    if (!read(&score, 4) || !read(&len, 4) || len < 0 || len > max_len || data->size() - offset < size_t(len)) {
      return absl::DataLossError(absl::StrCat("'", path, "': truncated or corrupt at entry ", v.pieces.size()));
    }
    const std::string piece(data->data() + offset, len);
    offset += len;
    const size_t id = v.pieces.size();
    v.types.push_back(id == 0                  ? TokenType::kUnknown
                      : id <= 2                ? TokenType::kControl
                      : BytePieceValue(piece) >= 0 ? TokenType::kByte
                                               : TokenType::kNormal);
    v.pieces.push_back(absl::StrReplaceAll(piece, {{" ", kSpaceMark}}));
    v.scores.push_back(score);
  }
  if (vocab_size > 0 && int(v.pieces.size()) != vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': has ", v.pieces.size(), " tokens, the model expects ",
                                                   vocab_size));
  }
  if (v.pieces.size() < 259) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", v.pieces.size(),
                                                   " tokens is too few (ids 3..258 must be the byte tokens)"));
  }
  return v;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& path, int vocab_size) {
  absl::StatusOr<Vocabulary> v = ReadLlama2cVocabulary(path, vocab_size);
  if (!v.ok()) return v.status();
  return MakeVocabularyTokenizer(std::move(*v));
}

absl::StatusOr<Vocabulary> ReadVocabulary(const std::string& path, int vocab_size) {
  absl::StatusOr<Vocabulary> v;
  if (gguf::GgufFile::HasMagic(path)) {
    absl::StatusOr<gguf::GgufFile> file = gguf::GgufFile::Open(path);
    if (!file.ok()) return file.status();
    v = VocabularyFromGguf(*file);
  } else if (path.size() > 6 && path.compare(path.size() - 6, 6, ".model") == 0) {
    v = ReadSentencePieceVocabulary(path);
  } else {
    return ReadLlama2cVocabulary(path, vocab_size);
  }
  if (v.ok() && vocab_size > 0 && int(v->pieces.size()) != vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': has ", v->pieces.size(),
                                                   " tokens, the model expects ", vocab_size));
  }
  return v;
}

}  // namespace a2sf::worker
