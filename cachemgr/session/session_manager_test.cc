#include "cachemgr/session/session_manager.h"

#include <algorithm>
#include <thread>

#include "cachemgr/store/cpu_score_store.h"
#include "common/default_policy_misfit.h"
#include "gtest/gtest.h"

namespace a2sf::cachemgr {
namespace {

std::unique_ptr<SessionManager> MakeManager(size_t max_sessions = 8, absl::Duration idle = absl::Minutes(10)) {
  SessionManagerOptions options;
  options.max_sessions = max_sessions;
  options.idle_timeout = idle;
  return std::make_unique<SessionManager>(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(),
                                          options);
}

SessionConfig Config(const std::string& policy, uint32_t budget_tokens, std::optional<double> alpha = {}) {
  SessionConfig config;
  config.geometry = {2, 1};
  PolicySpec spec;
  spec.name = policy;
  spec.alpha = alpha;
  config.policy = spec;
  config.budget.tokens = budget_tokens;
  return config;
}

ScoreView View(const std::vector<float>& v) { return {kv::ScoreDType::kFp32, v.data(), v.size()}; }

// Steps a two-head session of no evictions (`full`) from step `*t` on, one entry more each, until a
// step fails (or `limit` steps); returns that failure, `*t` left at the failed step.
absl::Status GrowUntilRefused(SessionManager& manager, const std::string& id, uint64_t* t, uint64_t limit) {
  for (; *t < limit; ++*t) {
    absl::Status grown = manager.Step(id, *t, *t, View(std::vector<float>(2 * (*t + 1), 0.5f))).status();
    if (!grown.ok()) return grown;
  }
  return absl::OkStatus();
}

TEST(ResolveBudget, TokensRatiosAndTheirErrors) {
  EXPECT_EQ(*ResolveBudget({5u, {}, 0}), 5u);
  EXPECT_EQ(*ResolveBudget({{}, 0.2, 4096}), 819u);  // floor(0.2 * 4096)
  EXPECT_EQ(*ResolveBudget({{}, 0.001, 10}), 1u);    // at least one token
  EXPECT_NE(ResolveBudget({0u, {}, 0}).status().message().find("budget.tokens"), std::string::npos);
  EXPECT_NE(ResolveBudget({{}, 1.5, 10}).status().message().find("budget.ratio"), std::string::npos);
  EXPECT_NE(ResolveBudget({{}, 0.5, 0}).status().message().find("budget.reference_length"), std::string::npos);
  EXPECT_FALSE(ResolveBudget({}).ok());
  EXPECT_FALSE(ResolveBudget({3u, 0.5, 10}).ok());
}

TEST(SessionManager, StepsProduceDecisionsAndCountEvictions) {
  auto manager = MakeManager();
  auto info = manager->Open(Config("local", 2));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->budget_tokens, 2u);
  for (uint64_t t = 0; t < 4; ++t) {
    const uint32_t n = std::min<uint32_t>(t + 1, 3);
    auto result = manager->Step(info->id, t, t, View(std::vector<float>(2 * n, 0.5f)));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->step, t);
    EXPECT_EQ(result->policy_name, "local");
    EXPECT_EQ(result->decision.evictions_per_head, t >= 2 ? 1u : 0u);
  }
  auto closed = manager->Close(info->id);
  ASSERT_TRUE(closed.ok());
  EXPECT_EQ(closed->steps, 4u);
  EXPECT_EQ(closed->evictions, 4u);  // 2 steps x 2 heads
  EXPECT_EQ(manager->Close(info->id).status().code(), absl::StatusCode::kNotFound);
}

TEST(SessionManager, OutOfOrderStepIsFailedPreconditionAndChangesNothing) {
  auto manager = MakeManager();
  auto info = *manager->Open(Config("a2sf", 4, 0.5));
  ASSERT_TRUE(manager->Step(info.id, 0, 0, View({0.5f, 0.5f})).ok());
  auto skipped = manager->Step(info.id, 2, 1, View(std::vector<float>(4, 0.5f)));
  EXPECT_EQ(skipped.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(skipped.status().message().find("expected step 1, got 2"), std::string::npos);
  auto repeated = manager->Step(info.id, 0, 1, View(std::vector<float>(4, 0.5f)));
  EXPECT_EQ(repeated.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager->Get(info.id)->steps, 1u);
  EXPECT_TRUE(manager->Step(info.id, 1, 1, View(std::vector<float>(4, 0.5f))).ok());
}

TEST(SessionManager, BadOpenRequestsNameTheField) {
  auto manager = MakeManager();
  SessionConfig no_layers = Config("local", 2);
  no_layers.geometry.num_layers = 0;
  EXPECT_NE(manager->Open(no_layers).status().message().find("shape.num_layers"), std::string::npos);
  SessionConfig zero_budget = Config("local", 0);
  EXPECT_NE(manager->Open(zero_budget).status().message().find("budget.tokens"), std::string::npos);
  SessionConfig bad_alpha = Config("a2sf", 4, 2.0);
  EXPECT_NE(manager->Open(bad_alpha).status().message().find("policy.alpha"), std::string::npos);
  SessionConfig unknown = Config("lru", 4);
  EXPECT_NE(manager->Open(unknown).status().message().find("policy.name"), std::string::npos);
  SessionConfig sinks = Config("streaming_llm", 4);  // default 4 sinks need budget > 4
  EXPECT_NE(manager->Open(sinks).status().message().find("policy.sinks"), std::string::npos);
  SessionConfig over_context = Config("local", 600);
  over_context.max_context = 512;
  EXPECT_EQ(manager->Open(over_context).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager->session_count(), 0u);
}

TEST(SessionManager, CapacityIsResourceExhausted) {
  auto manager = MakeManager(2);
  auto a = manager->Open(Config("local", 2));
  auto b = manager->Open(Config("local", 2));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(manager->Open(Config("local", 2)).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(manager->Close(a->id).ok());
  EXPECT_TRUE(manager->Open(Config("local", 2)).ok());
}

TEST(SessionManager, DefaultPolicyAppliesToSessionsThatNameNone) {
  auto manager = MakeManager();
  EXPECT_EQ(manager->default_policy().name, "a2sf");
  PolicySpec h2o;
  h2o.name = "h2o";
  ASSERT_TRUE(manager->SetDefaultPolicy(h2o).ok());
  SessionConfig config = Config("local", 4);
  config.policy.reset();
  auto info = manager->Open(config);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->policy.name, "h2o");
  PolicySpec bad;
  bad.name = "nope";
  EXPECT_FALSE(manager->SetDefaultPolicy(bad).ok());
  EXPECT_EQ(manager->default_policy().name, "h2o");
}

TEST(SessionManager, ADefaultThatDoesNotFitTheSessionIsTheOperatorsNotTheRequests) {
  // The operator's default carries layer_alphas for three layers; this session's model has two.
  auto manager = MakeManager();
  PolicySpec three_layers;
  three_layers.name = "a2sf";
  three_layers.layer_alphas = {0.1, 0.2, 0.3};
  ASSERT_TRUE(manager->SetDefaultPolicy(three_layers).ok());
  SessionConfig unnamed = Config("local", 4);
  unnamed.policy.reset();
  absl::Status misfit = manager->Open(unnamed).status();
  EXPECT_EQ(misfit.code(), absl::StatusCode::kFailedPrecondition) << misfit;
  EXPECT_TRUE(IsDefaultPolicyMisfit(misfit)) << misfit;
  EXPECT_NE(misfit.message().find("layer_alphas"), std::string::npos) << misfit;
  // The same policy named by the request is the request's own mistake.
  SessionConfig named = unnamed;
  named.policy = three_layers;
  EXPECT_EQ(manager->Open(named).status().code(), absl::StatusCode::kInvalidArgument);
  // A default whose recent window leaves nothing to evict in this budget: the same, and a session
  // with a larger budget fits it.
  PolicySpec window;
  window.name = "a2sf";
  window.recent_window = 4;
  ASSERT_TRUE(manager->SetDefaultPolicy(window).ok());
  EXPECT_EQ(manager->Open(unnamed).status().code(), absl::StatusCode::kFailedPrecondition);
  unnamed.budget.tokens = 8;
  EXPECT_TRUE(manager->Open(unnamed).ok());
  EXPECT_EQ(manager->session_count(), 1u);
}

TEST(SessionManager, SwapChangesDecisionsFromTheNextStep) {
  // Two identical sessions under H2O; one is swapped to A2SF(alpha 0.1) before step 6. Decisions are
  // equal before the swap, and the swapped session's decisions then follow A2SF over the same scores.
  auto manager = MakeManager();
  auto kept = *manager->Open(Config("h2o", 4));
  auto swapped = *manager->Open(Config("h2o", 4));
  // Old tokens get big early attention, so H2O keeps them; A2SF forgets it quickly.
  auto row = [](uint64_t t, uint32_t n) {
    std::vector<float> v(2 * n, 0.05f);
    for (uint32_t h = 0; h < 2; ++h) {
      if (t < 3) v[h * n] = 0.9f;
      v[h * n + n - 1] = 0.3f;
      if (n >= 2) v[h * n + n - 2] = 0.2f;
    }
    return v;
  };
  uint32_t n = 0;
  for (uint64_t t = 0; t < 6; ++t) {
    n = std::min<uint32_t>(n + 1, 5);
    auto a = manager->Step(kept.id, t, t, View(row(t, n)));
    auto b = manager->Step(swapped.id, t, t, View(row(t, n)));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->decision.evicted_positions, b->decision.evicted_positions);
    n = a->decision.entries_after;
  }
  PolicySpec a2sf;
  a2sf.name = "a2sf";
  a2sf.alpha = 0.1;
  auto swap = manager->SetPolicy(swapped.id, a2sf);
  ASSERT_TRUE(swap.ok()) << swap.status();
  EXPECT_EQ(swap->previous.name, "h2o");
  EXPECT_EQ(swap->effective_from_step, 6u);
  bool differed = false;
  for (uint64_t t = 6; t < 12; ++t) {
    auto a = manager->Step(kept.id, t, t, View(row(t, 5)));
    auto b = manager->Step(swapped.id, t, t, View(row(t, 5)));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->policy_name, "h2o");
    EXPECT_EQ(b->policy_name, "a2sf");
    differed |= a->decision.evicted_positions != b->decision.evicted_positions;
  }
  EXPECT_TRUE(differed);
  // H2O keeps position 0 (its early heavy attention); A2SF(0.1) let it go.
  auto kept_positions = manager->Get(kept.id);
  EXPECT_EQ(kept_positions->policy.name, "h2o");
  // An invalid swap changes nothing.
  PolicySpec bad;
  bad.name = "streaming_llm";
  bad.sinks = 10;
  EXPECT_EQ(manager->SetPolicy(swapped.id, bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager->Get(swapped.id)->policy.name, "a2sf");
}

TEST(SessionManager, BulkPrefillOnlyAsTheFirstStep) {
  auto manager = MakeManager();
  auto info = *manager->Open(Config("a2sf", 2, 0.5));
  std::vector<float> matrix(2 * 3 * 3, 0.0f);
  for (uint32_t h = 0; h < 2; ++h) {
    for (uint32_t q = 0; q < 3; ++q) {
      for (uint32_t k = 0; k <= q; ++k) matrix[(h * 3 + q) * 3 + k] = 1.0f / (q + 1);
    }
  }
  auto result = manager->BulkPrefill(info.id, 0, 0, 3, View(matrix));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->decision.evictions_per_head, 1u);
  // A = (0.25*1 + 0.5*0.5 + 1/3, 0.5*0.5 + 1/3, 1/3): position 2 has the smallest score.
  EXPECT_EQ(result->decision.evicted_positions, (std::vector<uint32_t>{2, 2}));
  EXPECT_EQ(manager->BulkPrefill(info.id, 1, 3, 3, View(matrix)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(manager->Step(info.id, 1, 3, View(std::vector<float>(6, 0.3f))).ok());
}

TEST(SessionManager, OpenSeededTakesOverEntriesAndStepNumbers) {
  auto manager = MakeManager();
  // Two heads (2 layers x 1 KV head) holding positions {0, 3, 5} and {5, 0, 4}, next step 6.
  auto info = manager->OpenSeeded(Config("local", 3), {0, 3, 5, 5, 0, 4}, 3, 6);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->steps, 6u);
  EXPECT_EQ(info->entries_per_head, 3u);
  EXPECT_EQ(manager->Step(info->id, 0, 6, View(std::vector<float>(8, 0.1f))).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto result = manager->Step(info->id, 6, 6, View(std::vector<float>(8, 0.1f)));
  ASSERT_TRUE(result.ok()) << result.status();
  // Local evicts each head's oldest: position 0 in slot 0 of head 0, slot 1 of head 1.
  EXPECT_EQ(result->decision.evicted_positions, (std::vector<uint32_t>{0, 0}));
  EXPECT_EQ(result->decision.evicted_slots, (std::vector<uint32_t>{0, 1}));
  // A seed of the wrong size is refused and leaves no session behind.
  const size_t before = manager->session_count();
  EXPECT_EQ(manager->OpenSeeded(Config("local", 3), {0, 1, 2}, 3, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager->session_count(), before);
}

TEST(SessionManager, IdleSessionsExpire) {
  // A session idle for less than the timeout stays (a timeout no test can outlast: a slow machine
  // cannot make the session look idle), one idle for longer goes.
  auto patient = MakeManager(8, absl::Hours(1));
  auto kept = *patient->Open(Config("local", 2));
  auto manager = MakeManager(8, absl::Milliseconds(50));
  auto info = *manager->Open(Config("local", 2));
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  EXPECT_EQ(patient->ExpireIdleSessions(), 0u);
  EXPECT_TRUE(patient->Get(kept.id).ok());
  EXPECT_EQ(manager->ExpireIdleSessions(), 1u);
  EXPECT_EQ(manager->Get(info.id).status().code(), absl::StatusCode::kNotFound);
}

TEST(SessionManager, ConcurrentSessionsOnManyThreads) {
  auto manager = MakeManager(64);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto info = manager->Open(Config("a2sf", 8, 0.4));
      if (!info.ok()) {
        ++failures;
        return;
      }
      uint32_t n = 0;
      for (uint64_t t = 0; t < 200; ++t) {
        auto r = manager->Step(info->id, t, t, View(std::vector<float>(2 * (n + 1), 0.125f)));
        if (!r.ok()) {
          ++failures;
          return;
        }
        n = r->decision.entries_after;
      }
      if (n != 8) ++failures;
      if (!manager->Close(info->id).ok()) ++failures;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(manager->session_count(), 0u);
}

TEST(SessionManager, IdsAreTheOpenSessions) {
  SessionManager manager(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), {});
  auto first = manager.Open(Config("local", 2));
  auto second = manager.Open(Config("local", 2));
  ASSERT_TRUE(first.ok() && second.ok());
  std::vector<std::string> ids = manager.Ids();
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> expected = {first->id, second->id};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(ids, expected);
  ASSERT_TRUE(manager.Close(first->id).ok());
  EXPECT_EQ(manager.Ids(), std::vector<std::string>{second->id});
}

// Issue 11, finding 3: one peer cannot fill --max_sessions.
TEST(SessionManagerLimits, SessionsPerPeerAreCounted) {
  SessionManagerOptions options;
  options.max_sessions = 8;
  options.max_sessions_per_peer = 2;
  SessionManager manager(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), options);
  SessionConfig config = Config("local", 2);
  config.owner = "ipv4:10.0.0.1";
  auto first = manager.Open(config);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(manager.Open(config).ok());
  absl::Status third = manager.Open(config).status();
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.message().find("--max_sessions_per_peer"), std::string::npos) << third;
  config.owner = "ipv4:10.0.0.2";  // another peer is not locked out
  EXPECT_TRUE(manager.Open(config).ok());
  ASSERT_TRUE(manager.Close(first->id).ok());  // closing frees the peer's slot
  config.owner = "ipv4:10.0.0.1";
  EXPECT_TRUE(manager.Open(config).ok());
}

// Issue 11, finding 3: the store's bytes are charged before it allocates, grow with use and are
// returned on close; a session that grows past a limit gets RESOURCE_EXHAUSTED and stays usable.
TEST(SessionManagerLimits, StoreBytesAreChargedBeforeAllocatingAndGrowWithUse) {
  SessionManagerOptions options;
  options.max_store_bytes = 4000;  // two heads: 2 sessions x 64 entries fit (3072), 64 + 128 (4608) do not
  options.max_session_bytes = 2 * 12 * 128;
  SessionManager manager(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), options);
  // A budget of 1000 no longer reserves 1001 entries up front: the session starts at 64.
  auto big_budget = manager.Open(Config("a2sf", 1000, 0.5));
  ASSERT_TRUE(big_budget.ok()) << big_budget.status();
  EXPECT_EQ(manager.charged_bytes(), 2u * 12 * 64);
  auto full = manager.Open(Config("full", 100));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(manager.charged_bytes(), 2u * 12 * 128);
  // Grow `full` entry by entry: 64 -> 128 fits the store only once `big_budget` is closed.
  uint64_t t = 0;
  const absl::Status grown = GrowUntilRefused(manager, full->id, &t, 200);
  EXPECT_EQ(grown.code(), absl::StatusCode::kResourceExhausted) << grown;
  EXPECT_NE(grown.message().find("--max_store_bytes"), std::string::npos) << grown;
  EXPECT_EQ(t, 64u) << "the 65th entry needs the second allocation";
  ASSERT_TRUE(manager.Close(big_budget->id).ok());
  EXPECT_EQ(manager.charged_bytes(), 2u * 12 * 64);
  ASSERT_TRUE(GrowUntilRefused(manager, full->id, &t, 128).ok()) << t;
  // The 129th entry would need 256 entries per head: past --max_session_bytes.
  absl::Status over = manager.Step(full->id, t, t, View(std::vector<float>(2 * (t + 1), 0.5f))).status();
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.message().find("--max_session_bytes"), std::string::npos) << over;
  EXPECT_EQ(manager.Get(full->id)->steps, 128u);
  ASSERT_TRUE(manager.Close(full->id).ok());
  EXPECT_EQ(manager.charged_bytes(), 0u);
}

// One peer cannot fill the store for the others (--max_peer_store_bytes): its sessions share a byte
// share, refused past it while another peer still opens; closing gives the share back, and a
// session the store refused does not keep any of it.
TEST(SessionManagerLimits, StoreBytesPerPeerAreCounted) {
  SessionManagerOptions options;
  options.max_store_bytes = 10000;
  options.max_peer_store_bytes = 2 * 12 * 64 * 2;  // two heads: two sessions of 64 entries per peer
  SessionManager manager(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), options);
  SessionConfig config = Config("full", 100);
  config.owner = "ipv4:10.0.0.1";
  auto first = manager.Open(config);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(manager.Open(config).ok());
  EXPECT_EQ(manager.charged_bytes_of("ipv4:10.0.0.1"), 2u * 12 * 64 * 2);
  const absl::Status third = manager.Open(config).status();
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted) << third;
  EXPECT_NE(third.message().find("--max_peer_store_bytes"), std::string::npos) << third;
  EXPECT_EQ(manager.charged_bytes_of("ipv4:10.0.0.1"), 2u * 12 * 64 * 2) << "the refused one holds nothing";
  // Growing a session past the share is refused too, and the session stays usable.
  uint64_t t = 0;
  const absl::Status grown = GrowUntilRefused(manager, first->id, &t, 100);
  EXPECT_EQ(grown.code(), absl::StatusCode::kResourceExhausted) << grown;
  EXPECT_NE(grown.message().find("--max_peer_store_bytes"), std::string::npos) << grown;
  EXPECT_EQ(manager.Get(first->id)->steps, 64u);
  config.owner = "ipv4:10.0.0.2";  // another peer is not locked out
  auto other = manager.Open(config);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(manager.charged_bytes(), 3u * 2 * 12 * 64);
  ASSERT_TRUE(manager.Close(first->id).ok());  // closing gives the share back
  config.owner = "ipv4:10.0.0.1";
  EXPECT_TRUE(manager.Open(config).ok());
  for (const std::string& id : manager.Ids()) ASSERT_TRUE(manager.Close(id).ok());
  EXPECT_EQ(manager.charged_bytes(), 0u);
  EXPECT_EQ(manager.charged_bytes_of("ipv4:10.0.0.1"), 0u);
  EXPECT_EQ(manager.charged_bytes_of("ipv4:10.0.0.2"), 0u);
}

// Issue 11, finding 5: heads x P x P must not wrap around 2^64 into a size that matches.
TEST(SessionManagerLimits, BulkPrefillSizeCheckDoesNotOverflow) {
  const uint32_t P = 0x7fffffffu;
  const SessionGeometry geometry{1024, 1024};
  uint64_t wrapped = uint64_t{geometry.heads()} * P * P;  // what the unchecked product came to
  EvictionRule rule;
  const float data = 0;
  BulkPrefill prefill{1, &rule, 0, P, {kv::ScoreDType::kFp32, &data, size_t(wrapped)}};
  absl::Status status = CheckBulkPrefillShape(prefill, geometry, 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("2^64"), std::string::npos) << status;
}

// Issue 11, finding 2: the session's secret is the only key to it.
TEST(SessionManagerLimits, AuthorizeNeedsTheSessionsSecret) {
  auto manager = MakeManager();
  auto a = manager->Open(Config("local", 2));
  auto b = manager->Open(Config("local", 2));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->secret.size(), 32u);
  EXPECT_NE(a->secret, b->secret);
  EXPECT_TRUE(manager->Authorize(a->id, a->secret).ok());
  EXPECT_EQ(manager->Authorize(a->id, b->secret).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(manager->Authorize(a->id, "").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(manager->Authorize("s-none", a->secret).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(manager->Get(a->id)->secret.empty());
  for (const SessionInfo& info : manager->List()) EXPECT_TRUE(info.secret.empty());
}

// A batch names its sessions as AuthorizeSession returned them: a session closed since is NOT_FOUND,
// a session twice keeps its first step, a position beyond kv::kMaxPosition is refused; each fails
// alone and changes nothing, the other steps are decided.
TEST(SessionManager, ABatchOfAuthorizedSessionsFailsEachBadStepAlone) {
  auto manager = MakeManager();
  auto a = *manager->Open(Config("local", 2)), b = *manager->Open(Config("local", 2)),
       c = *manager->Open(Config("local", 2));
  EXPECT_EQ(manager->AuthorizeSession(a.id, b.secret).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(manager->AuthorizeSession("s-none", a.secret).status().code(), absl::StatusCode::kNotFound);
  auto as = *manager->AuthorizeSession(a.id, a.secret), bs = *manager->AuthorizeSession(b.id, b.secret),
       cs = *manager->AuthorizeSession(c.id, c.secret);
  EXPECT_EQ(as.id(), a.id);
  ASSERT_TRUE(manager->Close(c.id).ok());  // between the authorisation and the step
  const std::vector<float> one(2, 0.5f);
  std::vector<SessionManager::BatchedStep> steps = {
      {bs, 0, kv::kMaxPosition + 1, View(one)}, {as, 0, 0, View(one)}, {cs, 0, 0, View(one)}, {as, 0, 0, View(one)}};
  std::vector<absl::StatusOr<StepResult>> results = manager->StepBatch(steps);
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kInvalidArgument) << results[0].status();
  EXPECT_TRUE(results[1].ok()) << results[1].status();
  EXPECT_EQ(results[2].status().code(), absl::StatusCode::kNotFound) << results[2].status();
  EXPECT_EQ(results[3].status().code(), absl::StatusCode::kInvalidArgument) << results[3].status();
  EXPECT_EQ(manager->Get(a.id)->steps, 1u);
  EXPECT_EQ(manager->Get(b.id)->steps, 0u);
  EXPECT_TRUE(manager->Step(b.id, 0, 0, View(one)).ok());  // b's position check changed nothing
}

}  // namespace
}  // namespace a2sf::cachemgr
