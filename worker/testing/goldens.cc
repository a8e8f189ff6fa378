#include "worker/testing/goldens.h"

#include <fstream>

#include "worker/testing/fixtures.h"

namespace a2sf::worker::testing {

nlohmann::json Goldens() {
  std::ifstream in(FixturesDir() + "/golden_greedy.json");
  return nlohmann::json::parse(in);
}

std::vector<float> GoldenLogits() {
  std::ifstream in(FixturesDir() + "/golden_logits16.f32", std::ios::binary);
  std::vector<float> values(16 * 512);
  in.read(reinterpret_cast<char*>(values.data()), values.size() * 4);
  return values;
}

}  // namespace a2sf::worker::testing
