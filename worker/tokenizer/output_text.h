// OutputText: a job's generated text, built token by token. Pieces are decoded with the tokenizer,
// only complete UTF-8 characters are released (Utf8StreamDecoder), and stop strings are matched on
// the decoded text across token boundaries.
//
// The rules (generation.proto's StopConditions): a stop string matches once it is complete in the
// text; only tokens from the min_tokens-th on may complete one (the search covers the new text and
// the len(stop) - 1 bytes before it, as vLLM's does). The text is cut right after the first match --
// anything the same token decoded beyond it is dropped. With include_stop_string the stop string ends
// the text and nothing is held back from the stream (all text before a match is output either way).
// Without it the stop string is removed, and a tail of the text that could begin a stop string is
// held back until the next tokens resolve it (OpenAI's rule); a stop token's own text is removed too.
//
// One per job; not thread-safe.
#ifndef A2SF_WORKER_TOKENIZER_OUTPUT_TEXT_H_
#define A2SF_WORKER_TOKENIZER_OUTPUT_TEXT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/tokenizer/tokenizer.h"

namespace a2sf::worker {

struct StopStringOptions {
  std::vector<std::string> stop_strings;
  bool include_stop_string = true;
  int min_tokens = 0;
};

inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;

// INVALID_ARGUMENT naming stop.stop_strings for an empty, over-long or non-UTF-8 string or too many.
absl::Status ValidateStopStrings(const std::vector<std::string>& stop_strings);

class OutputText {
 public:
  // `tokenizer` may be null (then there is no text and nothing matches); `previous_token` is the
  // prompt's last token (the first piece's decoding depends on it).
  OutputText(const Tokenizer* tokenizer, int previous_token, StopStringOptions options);

  struct Update {
    std::string text;      // what may be streamed now
    bool stopped = false;  // a stop string matched: the job ends with this token
  };
  // The `index`-th generated token (0-based); `ends_job`: an EOS or stop token.
  Update Push(int token, int index, bool ends_job);
  // At the end of the job: the text still held back (an unfinished character becomes U+FFFD).
  std::string Finish();

  const std::string& text() const { return text_; }  // all text so far, held-back tail included
  const std::string& matched() const { return matched_; }  // the stop string that matched, if any

 private:
  // Length of the longest tail of the unreleased text that is a proper prefix of a stop string.
  size_t HeldBack() const;
  std::string Release(size_t end);

  const Tokenizer* tokenizer_;
  int previous_;
  StopStringOptions options_;
  Utf8StreamDecoder utf8_;
  std::string text_;
  size_t released_ = 0;
  bool ended_ = false;
  std::string matched_;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_TOKENIZER_OUTPUT_TEXT_H_
