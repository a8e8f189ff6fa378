#include "worker/policy/in_process_policy_client.h"

#include <utility>
#include <vector>

namespace a2sf::worker {

namespace {

cachemgr::SessionConfig InProcessConfig(const ModelConfig& model, const cachemgr::PolicySpec& policy,
                                        const cachemgr::BudgetSpec& budget, const char* label) {
  cachemgr::SessionConfig config;
  config.geometry = {uint32_t(model.n_layers), uint32_t(model.n_kv_heads)};
  config.query_heads_per_kv_head = uint32_t(model.group_size());
  config.max_context = uint32_t(model.seq_len);
  config.policy = policy;
  config.budget = budget;
  config.label = label;
  return config;
}

}  // namespace

InProcessPolicyClient::InProcessPolicyClient() {
  cachemgr::SessionManagerOptions options;
  options.max_sessions = 1;
  options.idle_timeout = absl::ZeroDuration();
  manager_ = std::make_unique<cachemgr::SessionManager>(std::make_unique<cachemgr::CpuScoreStore>(1),
                                                        &cachemgr::PolicyRegistry::Builtin(), options);
}

absl::StatusOr<std::unique_ptr<InProcessPolicyClient>> InProcessPolicyClient::Create(const ModelConfig& model,
                                                                         const cachemgr::PolicySpec& policy,
                                                                         const cachemgr::BudgetSpec& budget,
                                                                         uint32_t decision_lag) {
  std::unique_ptr<InProcessPolicyClient> out(new InProcessPolicyClient());
  cachemgr::SessionConfig config = InProcessConfig(model, policy, budget, "in-process");
  config.decision_lag = decision_lag;
  absl::StatusOr<cachemgr::SessionInfo> info = out->manager_->Open(config);
  if (!info.ok()) return info.status();
  out->info_ = *info;
  return out;
}

absl::StatusOr<std::unique_ptr<InProcessPolicyClient>> InProcessPolicyClient::TakeOver(const Engine& engine,
                                                                           const cachemgr::PolicySpec& policy,
                                                                           uint32_t budget_tokens, uint64_t next_step,
                                                                           uint32_t next_position) {
  const ModelConfig& model = engine.config();
  const KvCacheSlots& cache = engine.cache();
  uint32_t entries = uint32_t(cache.entries());
  while (entries > 0 && cache.position(0, 0, int(entries - 1)) >= next_position) --entries;
  std::vector<uint32_t> positions;
  positions.reserve(size_t(model.n_layers) * model.n_kv_heads * entries);
  for (int l = 0; l < model.n_layers; ++l) {
    for (int g = 0; g < model.n_kv_heads; ++g) {
      for (uint32_t slot = 0; slot < entries; ++slot) positions.push_back(cache.position(l, g, int(slot)));
    }
  }
  cachemgr::BudgetSpec budget;
  budget.tokens = budget_tokens;
  std::unique_ptr<InProcessPolicyClient> out(new InProcessPolicyClient());
  absl::StatusOr<cachemgr::SessionInfo> info = out->manager_->OpenSeeded(
      InProcessConfig(model, policy, budget, "in-process (took over)"), positions, entries, next_step);
  if (!info.ok()) return info.status();
  out->info_ = *info;
  return out;
}

absl::StatusOr<EvictionDecision> InProcessPolicyClient::Step(uint64_t step, uint32_t position,
                                                       absl::Span<const float> scores) {
  absl::StatusOr<cachemgr::StepResult> result =
      manager_->Step(info_.id, step, position, {kv::ScoreDType::kFp32, scores.data(), scores.size()});
  if (!result.ok()) return result.status();
  return std::move(result->decision);
}

absl::StatusOr<EvictionDecision> InProcessPolicyClient::BulkPrefill(uint32_t first_position, uint32_t prompt_length,
                                                              absl::Span<const float> scores) {
  absl::StatusOr<cachemgr::StepResult> result = manager_->BulkPrefill(
      info_.id, 0, first_position, prompt_length, {kv::ScoreDType::kFp32, scores.data(), scores.size()});
  if (!result.ok()) return result.status();
  return std::move(result->decision);
}

}  // namespace a2sf::worker
