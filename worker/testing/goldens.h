// The reference outputs of the stories260K fixtures (an independent llama2.c run): the greedy
// generations and token ids of golden_greedy.json, and the first 16 steps' logits of
// golden_logits16.f32. For tests; read from FixturesDir() (fixtures.h) on every call.
#ifndef A2SF_WORKER_TESTING_GOLDENS_H_
#define A2SF_WORKER_TESTING_GOLDENS_H_

#include <vector>

#include "nlohmann/json.hpp"

namespace a2sf::worker::testing {

// golden_greedy.json, parsed (throws on a malformed file, failing the test).
nlohmann::json Goldens();
// golden_logits16.f32: 16 steps x 512 vocabulary logits, step-major.
std::vector<float> GoldenLogits();

}  // namespace a2sf::worker::testing

#endif  // A2SF_WORKER_TESTING_GOLDENS_H_
