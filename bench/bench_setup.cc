#include "bench/bench_setup.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_split.h"
#include "cachemgr/store/cpu_score_store.h"

namespace a2sf::bench {

std::vector<std::pair<std::string, std::unique_ptr<worker::ModelWeights>>> BenchModels(
    std::string fixtures, const std::vector<worker::WeightType>& types_110m, bool with_260k, bool panels) {
  std::vector<std::pair<std::string, std::unique_ptr<worker::ModelWeights>>> models;
  if (fixtures.empty() && std::getenv("A2SF_FIXTURES") != nullptr) fixtures = std::getenv("A2SF_FIXTURES");
  worker::LoadOptions load;
  load.panels = panels;
  if (with_260k) {
    auto loaded = fixtures.empty() ? absl::NotFoundError("no fixtures") : worker::LoadModel(fixtures + "/stories260K-dq.bin", load);
    if (loaded.ok()) {
      models.emplace_back("stories260K", std::move(*loaded));
    } else {
      std::fprintf(stderr, "stories260K fixtures not found: only the 110M shape is measured\n");
    }
  }
  for (worker::WeightType type : types_110m) {
    std::string name = "stories110M (random)";
    if (type != worker::WeightType::kF32) name += std::string(" ") + worker::WeightTypeName(type);
    models.emplace_back(name, std::move(*worker::MakeSyntheticModel(*worker::NamedShape("stories110M"), 7, type, panels)));
  }
  return models;
}

absl::StatusOr<std::vector<worker::WeightType>> ParseWeightTypes(const std::string& list) {
  std::vector<worker::WeightType> types;
  for (absl::string_view name : absl::StrSplit(list, ',')) {
    absl::StatusOr<std::optional<worker::WeightType>> type = worker::ParseWeightsFlag(std::string(name));
    if (!type.ok()) return type.status();
    if (!type->has_value()) return absl::InvalidArgumentError("name weight types (f32, f16, bf16, q8_0, q4_0), not auto");
    types.push_back(**type);
  }
  return types;
}

LocalCacheManager::LocalCacheManager(const std::string& name, bool tcp)
    : socket_("/tmp/" + name + "-" + std::to_string(getpid()) + ".sock"),
      manager_(std::make_unique<cachemgr::CpuScoreStore>(1), &cachemgr::PolicyRegistry::Builtin(), {}) {
  ring_handoff_ = std::move(*RingHandoffServer::Start(RingSocketPath(socket_), 0600));
  cachemgr::CacheManagerServiceOptions service_options;
  service_options.ring_handoff = ring_handoff_.get();
  service_ = std::make_unique<cachemgr::CacheManagerService>(&manager_, service_options);
  ServerOptions options;
  if (tcp) options.listen_addresses.push_back("127.0.0.1:0");
  options.listen_addresses.push_back("unix:" + socket_);
  options.plaintext = true;
  server_ = std::move(*RunningServer::Start(options, {service_.get()}));
}

LocalCacheManager::~LocalCacheManager() { server_->Shutdown(absl::ZeroDuration()); }

LocalWorker::LocalWorker(const worker::WorkerOptions& options) : service(options) {
  ServerOptions server_options;
  server_options.listen_addresses = {"127.0.0.1:0"};
  server_options.plaintext = true;
  server = std::move(*RunningServer::Start(server_options, {&service}));
  ChannelOptions plaintext;
  plaintext.plaintext = true;
  client = std::make_unique<client::WorkerClient>(*MakeChannel(server->dial_address(0), plaintext));
}

v1::GenerateRequest BosJob(const worker::ModelWeights& weights, int tokens) {
  v1::GenerateRequest request;
  request.mutable_token_ids()->add_ids(uint32_t(weights.config().bos_id));
  request.set_max_tokens(uint32_t(tokens));
  request.mutable_stop()->set_stop_on_eos(false);
  request.mutable_policy()->set_name("a2sf");
  request.mutable_budget()->set_ratio(0.2);
  return request;
}

}  // namespace a2sf::bench
