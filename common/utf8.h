// UTF-8 validity, the one rule for every text that crosses a boundary (prompts, stop strings, a peer's
// error messages). Thread-safe; no state.
#ifndef A2SF_COMMON_UTF8_H_
#define A2SF_COMMON_UTF8_H_

#include <cstddef>

#include "absl/strings/string_view.h"

namespace a2sf {

// Length of the valid UTF-8 sequence at text[i] (1-4), 0 if invalid, -1 if valid so far but cut
// short by the end of `text`. REQUIRES: i < text.size().
int Utf8SequenceLength(absl::string_view text, size_t i);

// True if `text` is valid UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool IsValidUtf8(absl::string_view text);

}  // namespace a2sf

#endif  // A2SF_COMMON_UTF8_H_
