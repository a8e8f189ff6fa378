// What the serving benchmarks share: the models they measure and a cache manager in their process.
// Not thread-safe; for benchmark mains.
#ifndef A2SF_BENCH_BENCH_SETUP_H_
#define A2SF_BENCH_BENCH_SETUP_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "a2sf/v1/generation.pb.h"
#include "absl/status/statusor.h"
#include "cachemgr/service/cache_manager_service.h"
#include "client/client.h"
#include "cachemgr/session/session_manager.h"
#include "common/grpc/server.h"
#include "common/shm/ring_handoff.h"
#include "worker/model/model.h"
#include "worker/service/generation_service.h"

namespace a2sf::bench {

// stories260K from `fixtures` (or $A2SF_FIXTURES when empty; skipped, with a note, without them) when
// `with_260k`, then
// a synthetic stories110M-shaped model (random weights: the trained one's speed, no download) held in
// each of `types_110m`, all quantized from the same fp32 draws (named "stories110M (random) TYPE" when
// the type is not f32). Matrices in panels unless `panels` is false (for comparisons).
std::vector<std::pair<std::string, std::unique_ptr<worker::ModelWeights>>> BenchModels(
    std::string fixtures, const std::vector<worker::WeightType>& types_110m = {worker::WeightType::kF32},
    bool with_260k = true, bool panels = true);

// A comma-separated list of weight type names (the --weights flag's values, "auto" excepted).
absl::StatusOr<std::vector<worker::WeightType>> ParseWeightTypes(const std::string& list);

// A cache manager (CPU store) serving on a pid-unique Unix socket with the shared-memory ring
// handoff, and on TCP loopback when `tcp`.
class LocalCacheManager {
 public:
  explicit LocalCacheManager(const std::string& name, bool tcp);
  ~LocalCacheManager();
  std::string unix_address() const { return "unix:" + socket_; }
  std::string tcp_address() const { return server_->dial_address(0); }

 private:
  std::string socket_;
  cachemgr::SessionManager manager_;
  std::unique_ptr<RingHandoffServer> ring_handoff_;
  std::unique_ptr<cachemgr::CacheManagerService> service_;
  std::unique_ptr<RunningServer> server_;
};

// A worker serving `options` in this process on TCP loopback (plaintext), and a client of it.
struct LocalWorker {
  explicit LocalWorker(const worker::WorkerOptions& options);
  worker::GenerationService service;
  std::unique_ptr<RunningServer> server;
  std::unique_ptr<client::WorkerClient> client;
};

// The benchmarks' job: from BOS, `tokens` tokens with EOS ignored, A2SF at a 20 % budget.
v1::GenerateRequest BosJob(const worker::ModelWeights& weights, int tokens);

}  // namespace a2sf::bench

#endif  // A2SF_BENCH_BENCH_SETUP_H_
