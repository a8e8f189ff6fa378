// Batch invariance: a sequence's tokens and logits (bit for bit) are the same in a batch of others as
// alone, whatever joins or leaves around it, and a chunked prefill equals the token-by-token one.
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/engine.h"
#include "worker/engine/generator.h"
#include "worker/policy/in_process_policy_client.h"
#include "worker/testing/fixtures.h"

namespace a2sf::worker {
namespace {

struct JobSpec {
  std::string policy;  // "" : no policy (full cache)
  uint32_t budget = 0;
  int prompt_length = 0;
  int join_step = 0;
  uint32_t lag = 0;
  bool bulk = false;
  int prefill_chunk = 1;
  int max_new_tokens = 40;
  WeightType kv_type = WeightType::kF32;  // the engine's KV cache
};

// Every logit vector a job produced (prompt positions, then generated tokens) and its tokens.
struct Trace {
  std::vector<std::vector<float>> logits;
  std::vector<int> tokens;
};

// One job's engine, policy and generation, recording its trace.
struct Job {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<InProcessPolicyClient> policy;
  std::unique_ptr<SequenceGeneration> sequence;
  Trace trace;
};

std::vector<int> Prompt(int length, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int> prompt = {1};
  while (int(prompt.size()) < length) prompt.push_back(3 + int(rng() % 500));
  return prompt;
}

std::unique_ptr<Job> StartJob(const ModelWeights& weights, const JobSpec& spec, unsigned seed) {
  auto job = std::make_unique<Job>();
  const std::vector<int> prompt = Prompt(spec.prompt_length, seed);
  if (!spec.policy.empty()) {
    cachemgr::PolicySpec policy;
    policy.name = spec.policy;
    cachemgr::BudgetSpec budget;
    budget.tokens = spec.budget;
    auto created = InProcessPolicyClient::Create(weights.config(), policy, budget, spec.lag);
    EXPECT_TRUE(created.ok()) << created.status();
    job->policy = std::move(*created);
  }
  GenerateOptions options;
  options.max_new_tokens = spec.max_new_tokens;
  options.stop_on_eos = false;
  options.bulk_prefill = spec.bulk;
  options.prefill_chunk = spec.prefill_chunk;
  EngineOptions engine_options;
  engine_options.kv_type = spec.kv_type;
  engine_options.cache_capacity =
      RequiredCacheCapacity(job->policy.get(), spec.prompt_length, spec.max_new_tokens, spec.bulk);
  job->engine = *Engine::Create(&weights, engine_options);
  Trace* trace = &job->trace;
  GenerateCallbacks callbacks;
  callbacks.on_prompt_logits = [trace](int, absl::Span<const float> logits) {
    trace->logits.emplace_back(logits.begin(), logits.end());
  };
  callbacks.on_token = [trace](const TokenEvent& event) {
    trace->logits.emplace_back(event.logits.begin(), event.logits.end());
    trace->tokens.push_back(event.id);
    return TokenVerdict::kContinue;
  };
  auto sequence = SequenceGeneration::Start(job->engine.get(), job->policy.get(), prompt, options, callbacks);
  EXPECT_TRUE(sequence.ok()) << sequence.status();
  job->sequence = std::move(*sequence);
  return job;
}

Trace RunAlone(const ModelWeights& weights, const JobSpec& spec, unsigned seed) {
  std::unique_ptr<Job> job = StartJob(weights, spec, seed);
  GenerationBatch batch(job->engine->own_pass());
  SequenceGeneration* one = job->sequence.get();
  while (!one->done()) batch.Step(absl::MakeConstSpan(&one, 1));
  EXPECT_TRUE(one->status().ok()) << one->status();
  return job->trace;
}

// Runs the jobs together, each joining at its step and leaving when done.
std::vector<Trace> RunTogether(const ModelWeights& weights, const std::vector<JobSpec>& specs, int threads) {
  ForwardPass pass(&weights, threads);
  GenerationBatch batch(&pass);
  std::vector<std::unique_ptr<Job>> jobs(specs.size());
  std::vector<SequenceGeneration*> running;
  size_t finished = 0;
  for (int step = 0; finished < specs.size(); ++step) {
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].join_step != step) continue;
      jobs[i] = StartJob(weights, specs[i], unsigned(i + 1));
      running.push_back(jobs[i]->sequence.get());
    }
    batch.Step(running);
    for (auto it = running.begin(); it != running.end();) {
      if (!(*it)->done()) {
        ++it;
        continue;
      }
      EXPECT_TRUE((*it)->status().ok()) << (*it)->status();
      it = running.erase(it);
      ++finished;
    }
    if (step > 10000) break;
  }
  std::vector<Trace> traces;
  for (auto& job : jobs) traces.push_back(job->trace);
  return traces;
}

void ExpectSameTrace(const Trace& alone, const Trace& other, const std::string& what) {
  EXPECT_EQ(alone.tokens, other.tokens) << what;
  ASSERT_EQ(alone.logits.size(), other.logits.size()) << what;
  for (size_t t = 0; t < alone.logits.size(); ++t) {
    ASSERT_EQ(alone.logits[t].size(), other.logits[t].size());
    EXPECT_EQ(std::memcmp(alone.logits[t].data(), other.logits[t].data(), alone.logits[t].size() * sizeof(float)), 0)
        << what << ": logits of step " << t << " differ";
  }
}

std::unique_ptr<ModelWeights> Load() {
  auto weights = LoadModel(testing::FixturesDir() + "/stories260K-dq.bin");
  EXPECT_TRUE(weights.ok()) << weights.status();
  return weights.ok() ? std::move(*weights) : nullptr;
}

const std::vector<JobSpec>& MixedJobs() {
  static const auto* jobs = new std::vector<JobSpec>{
      {"", 0, 5, 0},
      {"a2sf", 20, 12, 0},
      {"h2o", 16, 30, 3},
      {"local", 10, 7, 7},
      {"a2sf", 24, 20, 1, /*lag=*/2, false, /*prefill_chunk=*/8},
      {"streaming_llm", 12, 18, 5, 0, /*bulk=*/true, 4},
      {"full", 8, 9, 12, 0, false, 16, 25},
      {"tova", 14, 26, 20, 0, false, 6, 30},
      // f16 KV caches beside the f32 ones: one evicting, one full and chunked.
      {"a2sf", 18, 15, 2, 0, false, 1, 40, WeightType::kF16},
      {"", 0, 6, 4, 0, false, 4, 40, WeightType::kF16},
      // and q8_0 ones: an evicting one (its swap-removes move q8_0 rows), a chunked full one.
      {"h2o", 15, 14, 3, 0, false, 1, 40, WeightType::kQ8_0},
      {"", 0, 7, 6, 0, false, 5, 40, WeightType::kQ8_0},
  };
  return *jobs;
}

TEST(BatchInvariance, EveryJobOfAMixedBatchGetsItsAloneTokensAndLogitsBitForBit) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load();
  ASSERT_NE(weights, nullptr);
  const std::vector<JobSpec>& specs = MixedJobs();
  for (int threads : {1, 2}) {
    const std::vector<Trace> together = RunTogether(*weights, specs, threads);
    for (size_t i = 0; i < specs.size(); ++i) {
      const Trace alone = RunAlone(*weights, specs[i], unsigned(i + 1));
      EXPECT_EQ(int(alone.tokens.size()), specs[i].max_new_tokens);
      ExpectSameTrace(alone, together[i], "job " + std::to_string(i) + " (" + specs[i].policy + "), " +
                                              std::to_string(threads) + " threads");
    }
  }
}

// A policy that evicts during the prompt: the chunk stops at the budget, so the prompt's steps see
// the token-by-token run's scores and the tokens and logits are the same.
TEST(ChunkedPrefill, EqualsTheTokenByTokenPrompt) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load();
  ASSERT_NE(weights, nullptr);
  for (const char* policy : {"", "a2sf", "h2o", "local"}) {
    for (uint32_t lag : {0u, 2u}) {
      if (*policy == '\0' && lag != 0) continue;
      JobSpec spec{policy, 10, 45, 0, lag, false, 1, 20};
      const Trace token_by_token = RunAlone(*weights, spec, 7);
      for (int chunk : {4, 16, 64}) {
        spec.prefill_chunk = chunk;
        ExpectSameTrace(token_by_token, RunAlone(*weights, spec, 7),
                        std::string(policy) + " lag " + std::to_string(lag) + " chunk " + std::to_string(chunk));
      }
    }
  }
}

TEST(ChunkedPrefill, RefusesAChunkBelowOne) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load();
  ASSERT_NE(weights, nullptr);
  auto engine = *Engine::Create(weights.get(), {});
  GenerateOptions options;
  options.prefill_chunk = 0;
  const std::vector<int> prompt = {1, 300};
  EXPECT_EQ(SequenceGeneration::Start(engine.get(), nullptr, prompt, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ForwardPass, RefusesRowsOfOneEngineThatAreNotAdjacentAndChangesNothing) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load();
  ASSERT_NE(weights, nullptr);
  auto a = *Engine::Create(weights.get(), {});
  auto b = *Engine::Create(weights.get(), {});
  ForwardPass pass(weights.get(), 1);
  const std::vector<ForwardRow> split = {{a.get(), 1, 0}, {b.get(), 1, 0}, {a.get(), 5, 1}};
  EXPECT_EQ(pass.Run(split).code(), absl::StatusCode::kInvalidArgument);
  const std::vector<ForwardRow> backwards = {{a.get(), 1, 1}, {a.get(), 5, 0}};
  EXPECT_EQ(pass.Run(backwards).code(), absl::StatusCode::kInvalidArgument);
  const std::vector<ForwardRow> bad_token = {{a.get(), 1, 0}, {b.get(), 100000, 0}};
  EXPECT_EQ(pass.Run(bad_token).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->cache().entries(), 0);
  EXPECT_EQ(b->cache().entries(), 0);
  EngineOptions small;
  small.cache_capacity = 2;
  auto c = *Engine::Create(weights.get(), small);
  const std::vector<ForwardRow> too_many = {{a.get(), 1, 0}, {c.get(), 1, 0}, {c.get(), 2, 1}, {c.get(), 3, 2}};
  EXPECT_EQ(pass.Run(too_many).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a->cache().entries(), 0);
}

}  // namespace
}  // namespace a2sf::worker
