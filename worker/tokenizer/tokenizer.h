// Tokenizer: text <-> token ids for a model. Three sources: llama2.c's tokenizer.bin and the
// tokenizer.ggml.* metadata of a GGUF model (both read into a Vocabulary and tokenized by
// VocabularyTokenizer, vocabulary.h), and sentencepiece's tokenizer.model, the format real LLaMA-2
// ships (SentencePieceTokenizer, through libsentencepiece).
// Immutable after loading; safe to share between threads.
#ifndef A2SF_WORKER_TOKENIZER_TOKENIZER_H_
#define A2SF_WORKER_TOKENIZER_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/utf8.h"  // IsValidUtf8, for the tokenizers' users

namespace a2sf::worker {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  // The file format: "llama2.c" (tokenizer.bin), "sentencepiece" (tokenizer.model) or "gguf" (a GGUF
  // model's tokenizer.ggml.* metadata).
  virtual const char* kind() const = 0;
  // Encodes UTF-8 text (INVALID_ARGUMENT for invalid UTF-8), with BOS first when `add_bos`.
  virtual absl::StatusOr<std::vector<int>> Encode(const std::string& text, bool add_bos) const = 0;
  // The bytes token `token` adds to the text after `previous` (may be part of a UTF-8 character).
  virtual std::string DecodePiece(int previous, int token) const = 0;
};

// The most bytes of text a prompt for a context of `context_tokens` may hold: 64 a token, more than
// any piece of a LLaMA vocabulary spells, so a longer text cannot fit. Checked before encoding (the
// cost of encoding and holding a prompt grows with its bytes); one rule for gRPC text prompts and
// HTTP chat messages.
inline size_t MaxPromptTextBytes(int context_tokens) { return size_t(context_tokens > 0 ? context_tokens : 0) * 64; }

// Loads `path`: a GGUF file (by its magic) gives its own tokenizer, a file ending in ".model" is
// sentencepiece, anything else llama2.c's format.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);
// The tokenizer for a model: `tokenizer_path` when given, else the model's own when it carries one
// (a GGUF file with tokenizer.ggml.* metadata), else null (token-id prompts only).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerForModel(const std::string& model_path,
                                                                 const std::string& tokenizer_path);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& path, int vocab_size);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path);

// Turns a stream of token pieces into text that never splits a UTF-8 character: bytes of an
// unfinished character are held back until it completes. Bytes that can never form a valid character
// are replaced by U+FFFD.
class Utf8StreamDecoder {
 public:
  // Appends `bytes` and returns the text that is now complete.
  std::string Push(const std::string& bytes);
  // Returns what is left at the end of the stream (an unfinished character becomes U+FFFD).
  std::string Flush();

 private:
  std::string pending_;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_TOKENIZER_TOKENIZER_H_
