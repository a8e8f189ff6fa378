#include "worker/tokenizer/testing/reference_bpe.h"

#include <cstdint>
#include <map>
#include <unordered_map>
#include <utility>

namespace a2sf::worker::testing {

std::vector<int> ReferenceEncode(const Vocabulary& v, const std::string& text) {
  std::unordered_map<std::string, int> lookup;
  std::map<int, int> bytes;
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    const TokenType type = v.types[i];
    if (type == TokenType::kNormal || type == TokenType::kUserDefined || type == TokenType::kUndefined) {
      lookup.emplace(v.pieces[i], int(i));  // the first of duplicate pieces
    }
    if (type == TokenType::kByte && v.pieces[i].size() == 6) {
      bytes.emplace(std::stoi(v.pieces[i].substr(3, 2), nullptr, 16), int(i));
    }
  }
  if (text.empty()) return {};  // no space prefix for nothing
  std::string escaped = v.add_space_prefix ? "\xE2\x96\x81" : "";
  for (char c : text) escaped += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
  std::vector<std::pair<int, bool>> symbols;  // id, mergeable
  for (size_t i = 0; i < escaped.size();) {
    size_t len = 1;
    while (i + len < escaped.size() && (uint8_t(escaped[i + len]) & 0xC0) == 0x80) ++len;
    auto it = lookup.find(escaped.substr(i, len));
    if (it != lookup.end()) {
      symbols.push_back({it->second, true});
    } else {
      for (size_t k = 0; k < len; ++k) {
        auto byte = bytes.find(uint8_t(escaped[i + k]));
        symbols.push_back({byte != bytes.end() ? byte->second : v.unknown_id, false});
      }
    }
    i += len;
  }
  for (;;) {
    int best = -1;
    size_t at = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      if (!symbols[i].second || !symbols[i + 1].second) continue;
      auto it = lookup.find(v.pieces[symbols[i].first] + v.pieces[symbols[i + 1].first]);
      if (it != lookup.end() && (best < 0 || v.scores[it->second] > v.scores[best])) best = it->second, at = i;
    }
    if (best < 0) break;
    symbols[at].first = best;
    symbols.erase(symbols.begin() + at + 1);
  }
  std::vector<int> ids;
  for (const auto& s : symbols) ids.push_back(s.first);
  return ids;
}

}  // namespace a2sf::worker::testing
