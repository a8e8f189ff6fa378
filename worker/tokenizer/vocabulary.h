// A scored token vocabulary as LLaMA's tokenizers define it -- pieces, merge scores and token types,
// spaces written as U+2581 -- and the one tokenizer built on it (VocabularyTokenizer in
// vocabulary_tokenizer.cc). It is where every format that carries a vocabulary meets: llama2.c's
// tokenizer.bin and the `tokenizer.ggml.*` metadata of a GGUF file are read into a Vocabulary and
// tokenized by the same code; a sentencepiece tokenizer.model can be read into one too (to write it
// into a GGUF file), while its own tokenizing stays with libsentencepiece.
//
// Encoding (what llama2.c's run.c, sentencepiece's BPE and llama.cpp's SPM tokenizer do for LLaMA):
// spaces become U+2581 and one is prepended when `add_space_prefix` (non-empty text only); the text
// splits into code points, each a piece or, if none, its UTF-8 bytes as byte tokens ("<0xAB>"); then
// the adjacent pair whose concatenation is a piece with the highest score merges, leftmost on ties,
// until none does. Decoding: control tokens are empty, byte tokens their byte, other pieces their
// text with U+2581 as a space, less a leading space right after BOS.
//
// Value types; immutable tokenizers are safe to share between threads.
#ifndef A2SF_WORKER_TOKENIZER_VOCABULARY_H_
#define A2SF_WORKER_TOKENIZER_VOCABULARY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/tokenizer.h"

namespace a2sf::worker {

namespace gguf {
class GgufFile;
class GgufWriter;
}  // namespace gguf

// As llama.cpp numbers them (tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct Vocabulary {
  std::vector<std::string> pieces;  // U+2581 stands for a space
  std::vector<float> scores;        // higher merges first
  std::vector<TokenType> types;
  int bos_id = 1;
  int eos_id = 2;
  int unknown_id = 0;
  bool add_bos = true;  // Encode(text, true) adds BOS only when this is also true
  bool add_space_prefix = true;
  std::string kind = "llama2.c";  // the format it was read from, as Tokenizer::kind() reports it
};

// INVALID_ARGUMENT naming the problem: sizes that differ, ids out of range, no byte tokens.
absl::Status ValidateVocabulary(const Vocabulary& vocabulary);
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeVocabularyTokenizer(Vocabulary vocabulary);

// The vocabulary of a tokenizer file: llama2.c tokenizer.bin, sentencepiece tokenizer.model, or a
// GGUF model (by content, not name). `vocab_size` > 0 checks the size (and stops a tokenizer.bin there).
absl::StatusOr<Vocabulary> ReadVocabulary(const std::string& path, int vocab_size = 0);
absl::StatusOr<Vocabulary> ReadLlama2cVocabulary(const std::string& path, int vocab_size);
absl::StatusOr<Vocabulary> ReadSentencePieceVocabulary(const std::string& path);

// tokenizer.ggml.* (model "llama"): tokens, scores, token_type, bos/eos/unknown ids, add_bos_token,
// add_space_prefix. NOT_FOUND when the file has no tokenizer; INVALID_ARGUMENT when it is another
// kind (e.g. "gpt2") or malformed.
absl::StatusOr<Vocabulary> VocabularyFromGguf(const gguf::GgufFile& file);
void AddVocabularyToGguf(const Vocabulary& vocabulary, gguf::GgufWriter* writer);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_TOKENIZER_VOCABULARY_H_
