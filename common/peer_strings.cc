#include "common/peer_strings.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/strings/escaping.h"
#include "common/utf8.h"

namespace a2sf {

std::string RandomHexSecret(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  size_t filled = 0;
  while (filled < bytes) {
    const ssize_t n = getrandom(raw.data() + filled, bytes - filled, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::abort();  // no entropy source: never hand out a guessable credential
    filled += size_t(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(2 * bytes, '0');
  for (size_t i = 0; i < bytes; ++i) {
    out[2 * i] = kHex[raw[i] >> 4];
    out[2 * i + 1] = kHex[raw[i] & 15];
  }
  return out;
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = diff | (static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]));
  return diff == 0;
}

absl::string_view Utf8Prefix(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  // Back up over continuation bytes (10xxxxxx) to the start of the character that was cut.
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

absl::Status PeerError(int64_t code, absl::string_view message) {
  const absl::StatusCode known = code >= 1 && code <= 16 ? absl::StatusCode(code) : absl::StatusCode::kUnknown;
  if (IsValidUtf8(message)) return absl::Status(known, Utf8Prefix(message, 1024));
  // Raw bytes (a ring slot, a hand-off reply) that are not UTF-8: escaped, so that the message can go
  // on into proto3 strings (a job's error in GetJob/ListJobs) and logs.
  const std::string escaped = absl::CHexEscape(message);
  return absl::Status(known, Utf8Prefix(escaped, 1024));
}

}  // namespace a2sf
