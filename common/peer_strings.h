// Helpers for what crosses a trust boundary: random credentials, comparing them without leaking
// their contents through timing, and keeping strings from peers valid UTF-8 when they are cut.
// Thread-safe; no state.
#ifndef A2SF_COMMON_PEER_STRINGS_H_
#define A2SF_COMMON_PEER_STRINGS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace a2sf {

// `bytes` random bytes from the kernel's CSPRNG (getrandom), as 2 * bytes lowercase hex digits.
std::string RandomHexSecret(size_t bytes = 16);

// a == b, in time that depends only on the lengths (not on where they first differ).
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// The longest prefix of `text` of at most `max_bytes` bytes that does not end inside a UTF-8
// character. `text` is assumed valid UTF-8 (proto3 strings are); the result then is too.
absl::string_view Utf8Prefix(absl::string_view text, size_t max_bytes);

// The error a peer reports as a numeric code and a message (a ring slot, a batch's decision, a ring
// hand-off reply): a code outside absl's 1..16 becomes UNKNOWN, a message that is not valid UTF-8 is
// C-escaped, and the message is cut to 1024 bytes on a character boundary. Code 0 gives UNKNOWN too:
// a peer that says "error" with code 0 is wrong.
absl::Status PeerError(int64_t code, absl::string_view message);

}  // namespace a2sf

#endif  // A2SF_COMMON_PEER_STRINGS_H_
