#include "worker/tokenizer/output_text.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace a2sf::worker {

absl::Status ValidateStopStrings(const std::vector<std::string>& stop_strings) {
  if (stop_strings.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop.stop_strings: at most ", kMaxStopStrings, " strings, got ", stop_strings.size()));
  }
  for (const std::string& s : stop_strings) {
    if (s.empty()) return absl::InvalidArgumentError("stop.stop_strings: an empty string would match at once");
    if (s.size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop.stop_strings: at most ", kMaxStopStringBytes, " bytes each, got ", s.size()));
    }
    if (!IsValidUtf8(s)) return absl::InvalidArgumentError("stop.stop_strings: not valid UTF-8");
  }
  return absl::OkStatus();
}

OutputText::OutputText(const Tokenizer* tokenizer, int previous_token, StopStringOptions options)
    : tokenizer_(tokenizer), previous_(previous_token), options_(std::move(options)) {}

std::string OutputText::Release(size_t end) {
  std::string out = end > released_ ? text_.substr(released_, end - released_) : std::string();
  released_ = std::max(released_, end);
  return out;
}

size_t OutputText::HeldBack() const {
  if (options_.include_stop_string) return 0;
  const absl::string_view pending = absl::string_view(text_).substr(released_);
  size_t held = 0;
  for (const std::string& s : options_.stop_strings) {
    for (size_t k = std::min(s.size() - 1, pending.size()); k > held; --k) {
      if (absl::EndsWith(pending, absl::string_view(s).substr(0, k))) {
        held = k;
        break;
      }
    }
  }
  return held;
}

OutputText::Update OutputText::Push(int token, int index, bool ends_job) {
  Update update;
  if (ended_) return update;
  const size_t before = text_.size();
  if (tokenizer_ != nullptr && token != tokenizer_->bos_id() && token != tokenizer_->eos_id()) {
    text_ += utf8_.Push(tokenizer_->DecodePiece(previous_, token));
  }
  previous_ = token;
  if (index + 1 >= options_.min_tokens) {
    // The first match: the one that ends earliest (then the longest).
    size_t best_start = std::string::npos, best_end = std::string::npos;
    for (const std::string& s : options_.stop_strings) {
      const size_t from = before >= s.size() - 1 ? before - (s.size() - 1) : 0;
      const size_t at = text_.find(s, from);
      if (at == std::string::npos) continue;
      if (at + s.size() < best_end || (at + s.size() == best_end && at < best_start)) {
        best_start = at;
        best_end = at + s.size();
        matched_ = s;
      }
    }
    if (best_end != std::string::npos) {
      text_.resize(options_.include_stop_string ? best_end : best_start);
      update.text = Release(text_.size());
      update.stopped = true;
      ended_ = true;
      return update;
    }
  }
  if (ends_job) {
    if (!options_.include_stop_string) text_.resize(before);
    update.text = Release(text_.size());
    ended_ = true;
    return update;
  }
  update.text = Release(text_.size() - HeldBack());
  return update;
}

std::string OutputText::Finish() {
  if (ended_) return "";
  ended_ = true;
  text_ += utf8_.Flush();
  return Release(text_.size());
}

}  // namespace a2sf::worker
