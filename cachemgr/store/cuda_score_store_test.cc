// The CUDA store must make exactly the CPU store's decisions and hold exactly its scores.
#include "cachemgr/store/cuda_score_store.h"

#include <random>

#include "cachemgr/policy/registry.h"
#include "cachemgr/store/cpu_score_store.h"
#include "cachemgr/store/testing/store_steps.h"
#include "common/cuda/ipc.h"
#include "gtest/gtest.h"

namespace a2sf::cachemgr {
namespace {

std::unique_ptr<CudaScoreStore> MakeStoreOrSkip() {
  absl::StatusOr<std::unique_ptr<CudaScoreStore>> store = CudaScoreStore::Create();
  if (!store.ok()) return nullptr;
  return std::move(*store);
}

#define SKIP_WITHOUT_GPU(store)                                                          \
  if (store == nullptr) {                                                                \
    GTEST_SKIP() << "skipping: " << CudaScoreStore::Create().status().message();         \
  }

using testing::BuiltinRule;

TEST(CudaScoreStore, ReportsUnavailableWithAReasonWhenThereIsNoGpu) {
  absl::StatusOr<std::unique_ptr<CudaScoreStore>> store = CudaScoreStore::Create();
  if (store.ok()) {
    EXPECT_EQ((*store)->backend(), "cuda");
  } else {
    EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(store.status().message().find("no usable CUDA GPU"), std::string::npos);
  }
}

TEST(CudaScoreStore, TokenStepsMatchTheCpuStoreForEveryPolicyAndDtype) {
  auto cuda = MakeStoreOrSkip();
  SKIP_WITHOUT_GPU(cuda);
  const uint32_t layers = 4, kv_heads = 3, budget = 37;
  for (const char* name : {"a2sf", "h2o", "tova", "local", "streaming_llm", "full"}) {
    for (kv::ScoreDType dtype : {kv::ScoreDType::kFp32, kv::ScoreDType::kFp16}) {
      SCOPED_TRACE(std::string(name) + " " + kv::ScoreDTypeName(dtype));
      const EvictionRule rule = BuiltinRule(name, layers, budget, std::string(name) == "a2sf" ? std::optional<double>(0.4) : std::nullopt);
      CpuScoreStore cpu;
      auto hc = *cpu.CreateSession({layers, kv_heads}, budget + 1);
      auto hg = *cuda->CreateSession({layers, kv_heads}, budget + 1);
      std::mt19937 rng(3);
      uint32_t entries = 0;
      for (uint32_t t = 0; t < 150; ++t) {
        const size_t count = size_t{layers} * kv_heads * (entries + 1);
        std::vector<float> f32(count);
        std::vector<uint16_t> f16(count);
        for (size_t i = 0; i < count; ++i) {
          const uint32_t q = rng() % 64;  // exact in fp16: q / 64
          f32[i] = float(q) / 64.0f;
          // fp16 of q/64: build via the float's bits (q/64 is a normal or zero half).
          f16[i] = q == 0 ? 0 : static_cast<uint16_t>(((31 - __builtin_clz(q) - 6 + 15) << 10) |
                                                      ((q << (10 - (31 - __builtin_clz(q)))) & 0x3ff));
        }
        ScoreView view = dtype == kv::ScoreDType::kFp32 ? ScoreView{dtype, f32.data(), count} : ScoreView{dtype, f16.data(), count};
        ScoreView cpu_view{kv::ScoreDType::kFp32, f32.data(), count};
        TokenStep gs{hg, &rule, t, view}, cs{hc, &rule, t, cpu_view};
        absl::Status g_status, c_status;
        kv::EvictionDecision g, c;
        cuda->ProcessTokenSteps({&gs, 1}, {&g_status, 1}, {&g, 1});
        cpu.ProcessTokenSteps({&cs, 1}, {&c_status, 1}, {&c, 1});
        ASSERT_TRUE(g_status.ok()) << g_status;
        ASSERT_TRUE(c_status.ok()) << c_status;
        ASSERT_EQ(g.evicted_slots, c.evicted_slots) << "step " << t;
        ASSERT_EQ(g.evicted_positions, c.evicted_positions) << "step " << t;
        entries = c.entries_after;
      }
      for (uint32_t l = 0; l < layers; ++l) {
        for (uint32_t h = 0; h < kv_heads; ++h) {
          auto a = *cuda->ReadHead(hg, l, h);
          auto b = *cpu.ReadHead(hc, l, h);
          EXPECT_EQ(a.positions, b.positions);
          if (rule.uses_scores()) {
            EXPECT_EQ(a.scores, b.scores);
          }
        }
      }
    }
  }
}

TEST(CudaScoreStore, BulkPrefillMatchesTheCpuStore) {
  auto cuda = MakeStoreOrSkip();
  SKIP_WITHOUT_GPU(cuda);
  const uint32_t layers = 3, kv_heads = 2, P = 300, budget = 60;
  std::mt19937 rng(11);
  std::vector<float> matrix(size_t{layers} * kv_heads * P * P, 0.0f);
  for (size_t h = 0; h < size_t{layers} * kv_heads; ++h) {
    for (uint32_t q = 0; q < P; ++q) {
      for (uint32_t k = 0; k <= q; ++k) matrix[(h * P + q) * P + k] = float(rng() % 32) / 32.0f;
    }
  }
  for (const char* name : {"a2sf", "h2o", "local", "streaming_llm"}) {
    SCOPED_TRACE(name);
    const EvictionRule rule = BuiltinRule(name, layers, budget);
    CpuScoreStore cpu;
    auto hc = *cpu.CreateSession({layers, kv_heads}, P);
    auto hg = *cuda->CreateSession({layers, kv_heads}, P);
    ScoreView view{kv::ScoreDType::kFp32, matrix.data(), matrix.size()};
    auto c = cpu.ProcessBulkPrefill({hc, &rule, 0, P, view});
    auto g = cuda->ProcessBulkPrefill({hg, &rule, 0, P, view});
    ASSERT_TRUE(c.ok() && g.ok()) << g.status();
    EXPECT_EQ(g->evicted_slots, c->evicted_slots);
    EXPECT_EQ(g->evicted_positions, c->evicted_positions);
  }
}

TEST(CudaScoreStore, InvalidScoresChangeNothing) {
  auto cuda = MakeStoreOrSkip();
  SKIP_WITHOUT_GPU(cuda);
  const EvictionRule rule = BuiltinRule("a2sf", 1, 2, 0.5);
  auto h = *cuda->CreateSession({1, 1}, 3);
  std::vector<float> ok1 = {0.5f}, ok2 = {0.5f, 0.5f}, bad = {0.1f, std::nanf(""), 0.2f};
  for (auto* v : {&ok1, &ok2}) {
    TokenStep s{h, &rule, static_cast<uint32_t>(v->size() - 1), {kv::ScoreDType::kFp32, v->data(), v->size()}};
    absl::Status st;
    kv::EvictionDecision d;
    cuda->ProcessTokenSteps({&s, 1}, {&st, 1}, {&d, 1});
    ASSERT_TRUE(st.ok());
  }
  const auto before = *cuda->ReadHead(h, 0, 0);
  TokenStep s{h, &rule, 2, {kv::ScoreDType::kFp32, bad.data(), bad.size()}};
  absl::Status st;
  kv::EvictionDecision d;
  cuda->ProcessTokenSteps({&s, 1}, {&st, 1}, {&d, 1});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  const auto after = *cuda->ReadHead(h, 0, 0);
  EXPECT_EQ(after.scores, before.scores);
  EXPECT_EQ(after.positions, before.positions);
}

}  // namespace
}  // namespace a2sf::cachemgr

namespace a2sf::cachemgr {
namespace {

// Device-resident scores (a worker's exported buffer, here one of this process): read in place after
// the writer's event, with the decisions of the same scores uploaded from the host; a mixed batch of
// a device step and a host step decides each as if alone.
TEST(CudaScoreStoreDeviceScores, TokenStepsReadInPlaceDecideLikeHostScores) {
  auto cuda = MakeStoreOrSkip();
  SKIP_WITHOUT_GPU(cuda);
  const uint32_t layers = 3, kv_heads = 2, budget = 11;
  const EvictionRule rule = BuiltinRule("a2sf", layers, budget, 0.5);
  const size_t max_values = size_t{layers} * kv_heads * (budget + 1);
  auto buffer = cuda_ipc::ExportedDeviceBuffer::Create(max_values * 4);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  CpuScoreStore cpu;
  auto hc = *cpu.CreateSession({layers, kv_heads}, budget + 1);
  auto hd = *cuda->CreateSession({layers, kv_heads}, budget + 1);
  auto hh = *cuda->CreateSession({layers, kv_heads}, budget + 1);
  std::mt19937 rng(5);
  uint32_t entries = 0;
  for (uint32_t t = 0; t < 40; ++t) {
    const size_t count = size_t{layers} * kv_heads * (entries + 1);
    std::vector<float> scores(count);
    for (float& v : scores) v = float(rng() % 1000) / 1000.0f;
    ASSERT_TRUE(cuda_ipc::CopyToDevice((*buffer)->device_pointer(), scores.data(), count * 4).ok());
    ASSERT_TRUE(cuda_ipc::RecordEvent((*buffer)->event()).ok());
    ScoreView device{kv::ScoreDType::kFp32, (*buffer)->device_pointer(), count, true, (*buffer)->event()};
    ScoreView host{kv::ScoreDType::kFp32, scores.data(), count};
    TokenStep steps[2] = {{hd, &rule, t, device}, {hh, &rule, t, host}};
    absl::Status statuses[2];
    kv::EvictionDecision decisions[2];
    cuda->ProcessTokenSteps(steps, statuses, decisions);
    TokenStep cs{hc, &rule, t, host};
    absl::Status c_status;
    kv::EvictionDecision c;
    cpu.ProcessTokenSteps({&cs, 1}, {&c_status, 1}, {&c, 1});
    ASSERT_TRUE(statuses[0].ok()) << statuses[0];
    ASSERT_TRUE(statuses[1].ok()) << statuses[1];
    ASSERT_EQ(decisions[0].evicted_slots, c.evicted_slots) << "step " << t;
    ASSERT_EQ(decisions[1].evicted_slots, c.evicted_slots) << "step " << t;
    entries = c.entries_after;
  }
  // Invalid values in device memory are refused like host ones, and change nothing.
  const size_t count = size_t{layers} * kv_heads * (entries + 1);
  std::vector<float> bad(count, 0.25f);
  bad[count / 2] = -1.0f;
  ASSERT_TRUE(cuda_ipc::CopyToDevice((*buffer)->device_pointer(), bad.data(), count * 4).ok());
  TokenStep step{hd, &rule, 1000, {kv::ScoreDType::kFp32, (*buffer)->device_pointer(), count, true, nullptr}};
  absl::Status status;
  kv::EvictionDecision decision;
  cuda->ProcessTokenSteps({&step, 1}, {&status, 1}, {&decision, 1});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(*cuda->EntriesPerHead(hd), entries);
}

TEST(CudaScoreStoreDeviceScores, TheCpuStoreAndBulkPrefillsRefuseDeviceScores) {
  const EvictionRule rule = BuiltinRule("a2sf", 1, 4, 0.5);
  CpuScoreStore cpu;
  auto session = *cpu.CreateSession({1, 1}, 5);
  float value = 0.5f;
  TokenStep step{session, &rule, 0, {kv::ScoreDType::kFp32, &value, 1, true, nullptr}};
  absl::Status status;
  kv::EvictionDecision decision;
  cpu.ProcessTokenSteps({&step, 1}, {&status, 1}, {&decision, 1});
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("GPU memory"), std::string::npos) << status;
  BulkPrefill prefill{session, &rule, 0, 1, {kv::ScoreDType::kFp32, &value, 1, true, nullptr}};
  EXPECT_EQ(cpu.ProcessBulkPrefill(prefill).status().code(), absl::StatusCode::kFailedPrecondition);
  auto cuda = MakeStoreOrSkip();
  if (cuda == nullptr) return;
  auto device_session = *cuda->CreateSession({1, 1}, 5);
  prefill.session = device_session;
  EXPECT_EQ(cuda->ProcessBulkPrefill(prefill).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace a2sf::cachemgr
