#include "worker/service/testing/remote_session.h"

#include "gtest/gtest.h"

namespace a2sf::worker::testing {

ModelConfig SmallModel() {
  ModelConfig model;
  model.n_layers = int(kSmallModelLayers);
  model.n_heads = 4;
  model.n_kv_heads = int(kSmallModelKvHeads);
  model.seq_len = 64;
  return model;
}

std::vector<float> BulkPrefillScores(uint32_t prompt_length) {
  return std::vector<float>(size_t(kSmallModelScoreHeads) * prompt_length * prompt_length, 0.5f);
}

std::unique_ptr<RemotePolicyClient> OpenA2sfSession(const std::shared_ptr<grpc::Channel>& channel,
                                                    RemotePolicyOptions options) {
  v1::PolicySpec policy;
  policy.set_name("a2sf");
  policy.set_alpha(0.5);
  v1::Budget budget;
  budget.set_tokens(4);
  options.score_dtype = kv::ScoreDType::kFp32;
  auto remote = RemotePolicyClient::Open(channel, SmallModel(), &policy, budget, options);
  EXPECT_TRUE(remote.ok()) << remote.status();
  return remote.ok() ? std::move(*remote) : nullptr;
}

}  // namespace a2sf::worker::testing
