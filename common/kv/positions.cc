#include "common/kv/positions.h"

#include "absl/strings/str_cat.h"

namespace a2sf::kv {

absl::StatusOr<uint32_t> PositionFromWire(uint64_t value, absl::string_view field) {
  if (value > kMaxPosition) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", value, " exceeds the largest supported position ", kMaxPosition));
  }
  return static_cast<uint32_t>(value);
}

}  // namespace a2sf::kv
