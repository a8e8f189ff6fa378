// The remote session that the worker's tests of RemotePolicyClient against a cache manager open
// (score_batcher_test, session_transport_test), written once: the small model shape they step and an
// a2sf session for it. The tests pick only how the scores travel (ring, batcher, decision lag,
// deadline) and which channel they go to.
//
// Thread-safety: stateless; OpenA2sfSession reports to gtest, so call it from a test.
#ifndef A2SF_WORKER_SERVICE_TESTING_REMOTE_SESSION_H_
#define A2SF_WORKER_SERVICE_TESTING_REMOTE_SESSION_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "worker/model/model.h"
#include "worker/service/remote_policy_client.h"

namespace a2sf::worker::testing {

// SmallModel()'s layers and KV heads, and so its score heads per step.
inline constexpr uint32_t kSmallModelLayers = 2, kSmallModelKvHeads = 2;
inline constexpr uint32_t kSmallModelScoreHeads = kSmallModelLayers * kSmallModelKvHeads;
// 2 layers, 4 query heads over 2 KV heads, 64 positions.
ModelConfig SmallModel();

// A bulk prefill's scores for a prompt of `prompt_length` tokens of SmallModel() (kSmallModelScoreHeads
// P x P matrices), all 0.5.
std::vector<float> BulkPrefillScores(uint32_t prompt_length);

// Opens an a2sf session (alpha 0.5, a budget of 4 tokens) for SmallModel() on `channel`, its scores
// as fp32 (`options.score_dtype` is overridden), travelling as the rest of `options` says. When it
// does not open: a test failure naming the status, and null.
std::unique_ptr<RemotePolicyClient> OpenA2sfSession(const std::shared_ptr<grpc::Channel>& channel,
                                                    RemotePolicyOptions options);

}  // namespace a2sf::worker::testing

#endif  // A2SF_WORKER_SERVICE_TESTING_REMOTE_SESSION_H_
