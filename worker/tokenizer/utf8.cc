#include <cstdint>
#include <string>

#include "common/utf8.h"
#include "worker/tokenizer/tokenizer.h"

namespace a2sf::worker {
namespace {

const char kReplacement[] = "\xEF\xBF\xBD";

}  // namespace

std::string Utf8StreamDecoder::Push(const std::string& bytes) {
  pending_ += bytes;
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const int len = Utf8SequenceLength(pending_, i);
    if (len < 0) break;  // wait for the rest of the character
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    out.append(pending_, i, len);
    i += len;
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8StreamDecoder::Flush() {
  std::string out = pending_.empty() ? "" : kReplacement;
  pending_.clear();
  return out;
}

}  // namespace a2sf::worker
