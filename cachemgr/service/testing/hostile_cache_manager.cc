#include "cachemgr/service/testing/hostile_cache_manager.h"

#include <set>
#include <utility>

#include "cachemgr/policy_library.h"

namespace a2sf::cachemgr::testing {

const char* BreachName(Breach breach) {
  switch (breach) {
    case Breach::kNone: return "none";
    case Breach::kWrongSession: return "wrong session";
    case Breach::kUnknownSession: return "unknown session";
    case Breach::kMissingDecision: return "missing decision";
    case Breach::kExtraDecision: return "extra decision";
    case Breach::kWrongStep: return "wrong step";
    case Breach::kCutStream: return "stream cut mid-batch";
    case Breach::kMalformed: return "malformed decision";
  }
  return "?";
}

void HostileCacheManager::Target(std::function<bool(const v1::ScoreStep&)> targets, Breach breach) {
  absl::MutexLock lock(&mutex_);
  targets_ = std::move(targets);
  breach_ = breach;
}

int HostileCacheManager::breaches() const {
  absl::MutexLock lock(&mutex_);
  return breaches_;
}

Breach HostileCacheManager::BreachFor(const v1::ScoreBatch& batch) {
  absl::MutexLock lock(&mutex_);
  if (breach_ == Breach::kNone || !targets_) return Breach::kNone;
  for (const v1::ScoreStep& step : batch.steps()) {
    if (targets_(step)) {
      ++breaches_;
      return breach_;
    }
  }
  return Breach::kNone;
}

namespace {

// A decision that claims more evictions per head than it lists: what no honest cache manager sends.
void Malform(v1::EvictionDecision* decision) {
  decision->set_evictions_per_head(decision->evictions_per_head() + 3);
  decision->clear_evicted_positions();
  decision->clear_evicted_slots();
}

void Tamper(Breach breach, v1::DecisionBatch* answer) {
  if (answer->decisions_size() == 0) return;
  v1::SessionDecision* first = answer->mutable_decisions(0);
  switch (breach) {
    case Breach::kWrongSession:
      if (answer->decisions_size() >= 2) {
        answer->mutable_decisions()->SwapElements(0, 1);
        break;
      }
      [[fallthrough]];
    case Breach::kUnknownSession:
      first->set_session_id("s-00000000000000000000000000000000");
      break;
    case Breach::kMissingDecision:
      answer->mutable_decisions()->RemoveLast();
      break;
    case Breach::kExtraDecision:
      *answer->add_decisions() = *first;
      break;
    case Breach::kWrongStep:
      first->mutable_decision()->set_step(first->decision().step() + 1000);
      break;
    case Breach::kMalformed:
      Malform(first->mutable_decision());
      break;
    case Breach::kNone:
    case Breach::kCutStream:
      break;
  }
}

}  // namespace

grpc::Status HostileCacheManager::StreamScores(grpc::ServerContext* context,
                                               grpc::ServerReaderWriter<v1::EvictionDecision, v1::ScoreStep>* stream) {
  // The stream's first message names the session; every step then goes through the unary SubmitStep
  // (as a batch of one, for BreachFor).
  v1::ScoreBatch one;
  v1::ScoreStep* step = one.add_steps();
  std::string session_id, secret;
  while (stream->Read(step)) {
    if (session_id.empty()) session_id = step->session_id(), secret = step->session_secret();
    step->set_session_id(session_id);
    step->set_session_secret(secret);
    const Breach breach = BreachFor(one);
    if (breach == Breach::kCutStream) return grpc::Status::OK;
    v1::EvictionDecision decision;
    if (grpc::Status status = honest_->SubmitStep(context, step, &decision); !status.ok()) return status;
    if (breach == Breach::kWrongStep) decision.set_step(decision.step() + 1000);
    if (breach == Breach::kMalformed) Malform(&decision);
    if (!stream->Write(decision)) break;
    if (breach == Breach::kExtraDecision && !stream->Write(decision)) break;
  }
  return grpc::Status::OK;
}

grpc::Status HostileCacheManager::StreamScoreBatches(
    grpc::ServerContext*, grpc::ServerReaderWriter<v1::DecisionBatch, v1::ScoreBatch>* stream) {
  std::set<std::string> served;
  v1::ScoreBatch batch;
  v1::DecisionBatch answer;
  while (stream->Read(&batch)) {
    const Breach breach = BreachFor(batch);
    if (breach == Breach::kCutStream) return grpc::Status::OK;
    answer.Clear();
    if (grpc::Status status = honest_->ServeBatch(batch, &answer, &served); !status.ok()) return status;
    Tamper(breach, &answer);
    if (!stream->Write(answer)) break;
  }
  return grpc::Status::OK;
}

HostileCacheManagerStack::HostileCacheManagerStack() {
  manager_ = std::make_unique<SessionManager>(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(),
                                              SessionManagerOptions{});
  service_ = std::make_unique<CacheManagerService>(manager_.get());
  hostile_ = std::make_unique<HostileCacheManager>(service_.get());
  ServerOptions options;
  options.listen_addresses = {"127.0.0.1:0"};
  options.plaintext = true;
  honest_server_ = std::move(*RunningServer::Start(options, {service_.get()}));
  hostile_server_ = std::move(*RunningServer::Start(options, {hostile_.get()}));
  ChannelOptions channel_options;
  channel_options.plaintext = true;
  honest_channel_ = *MakeChannel(honest_server_->dial_address(0), channel_options);
  hostile_channel_ = *MakeChannel(hostile_server_->dial_address(0), channel_options);
}

HostileCacheManagerStack::~HostileCacheManagerStack() {
  // The servers go first: their handlers use the services and the session manager.
  hostile_server_.reset();
  honest_server_.reset();
}

}  // namespace a2sf::cachemgr::testing
