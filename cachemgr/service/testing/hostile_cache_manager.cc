#include "cachemgr/service/testing/hostile_cache_manager.h"

#include <unistd.h>

#include <algorithm>
#include <set>
#include <utility>

#include "cachemgr/policy_library.h"
#include "common/grpc/status.h"
#include "common/kv/proto_convert.h"
#include "common/testing/temp_socket.h"

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
    case Breach::kWrongStepThenHold: return "wrong step, then the call held open";
    case Breach::kHoldAfterAnswer: return "answered, then the call held open";
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

Breach HostileCacheManager::BreachFor(const v1::ScoreStep& step) {
  absl::MutexLock lock(&mutex_);
  if (breach_ == Breach::kNone || !targets_ || !targets_(step)) return Breach::kNone;
  return breach_;
}

Breach HostileCacheManager::Count(Breach breach) {
  if (breach != Breach::kNone) {
    absl::MutexLock lock(&mutex_);
    ++breaches_;
  }
  return breach;
}

Breach HostileCacheManager::BreachFor(const v1::ScoreBatch& batch) {
  for (const v1::ScoreStep& step : batch.steps()) {
    if (const Breach breach = BreachFor(step); breach != Breach::kNone) return breach;
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

// A single step's decision as `breach` says (the breaches of one decision; the others leave it).
void TamperDecision(Breach breach, v1::EvictionDecision* decision) {
  if (breach == Breach::kWrongStep || breach == Breach::kWrongStepThenHold) decision->set_step(decision->step() + 1000);
  if (breach == Breach::kMalformed) Malform(decision);
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
    case Breach::kWrongStepThenHold:
    case Breach::kMalformed:
      TamperDecision(breach, first->mutable_decision());
      break;
    case Breach::kNone:
    case Breach::kCutStream:
    case Breach::kHoldAfterAnswer:  // an honest answer; the hold comes after it (Holds)
      break;
  }
}

}  // namespace

namespace {

// The ring a worker offered: its descriptor taken from the hand-off server and mapped.
absl::StatusOr<std::shared_ptr<ScoreRing>> AttachOffered(RingHandoffServer* handoff, const v1::SharedMemoryRing& offer) {
  absl::StatusOr<int> fd = handoff->Take(offer.handle());
  if (!fd.ok()) return fd.status();
  absl::StatusOr<std::unique_ptr<ScoreRing>> ring = ScoreRing::Attach(*fd, offer.num_slots(), offer.slot_bytes());
  close(*fd);
  if (!ring.ok()) return ring.status();
  return std::shared_ptr<ScoreRing>(std::move(*ring));
}

// Ring slot `seq` (its header `header`) as a wire step, into `step`; the honest service checks the rest.
absl::Status StepFromSlot(const ScoreRing& ring, uint64_t seq, const RingStep& header, v1::ScoreStep* step) {
  if (header.kind == kRingStepKindDeviceToken || header.num_dims > 4 || header.payload_bytes > ring.payload_capacity()) {
    return absl::InvalidArgumentError("the hostile cache manager serves only ring slots that hold their scores");
  }
  step->set_step(header.step);
  step->set_kind(v1::StepKind(header.kind));
  step->set_position(header.position);
  v1::ScoreTensor* scores = step->mutable_scores();
  scores->Clear();
  for (uint32_t d = 0; d < header.num_dims; ++d) scores->add_shape(header.shape[d]);
  scores->set_dtype(v1::ScoreDType(header.dtype));
  scores->set_data(static_cast<const char*>(ring.step_payload(seq)), header.payload_bytes);
  return absl::OkStatus();
}

// Writes `decision`, of ring slot `seq` (step `step`), back into the slot as `breach` says.
void WriteRingDecision(ScoreRing* ring, uint64_t seq, uint64_t step, const kv::EvictionDecision& decision,
                       Breach breach) {
  if (breach == Breach::kMalformed) {
    // More evictions per head than it lists (within a slot's room: only the count gives it away).
    RingDecision* malformed = ring->mutable_decision(seq);
    *malformed = RingDecision{};
    malformed->step = step;
    malformed->evictions_per_head = std::min(decision.evictions_per_head + 3, ScoreRing::kMaxDecisionEvictionsPerHead);
    ring->Complete(seq);
    return;
  }
  const bool wrong_step = breach == Breach::kWrongStep || breach == Breach::kWrongStepThenHold;
  ring->CompleteDecision(seq, wrong_step ? step + 1000 : step, decision).IgnoreError();
}

// Whether `breach` holds the call open after its answer.
bool Holds(Breach breach) { return breach == Breach::kWrongStepThenHold || breach == Breach::kHoldAfterAnswer; }

// A call after a holding breach's answer: held, answering nothing, until the worker cancels it.
grpc::Status HoldUntilCancelled(grpc::ServerContext* context) {
  const absl::Time cap = absl::Now() + kHoldCap;
  while (!context->IsCancelled() && absl::Now() < cap) absl::SleepFor(absl::Milliseconds(5));
  return grpc::Status::OK;
}

}  // namespace

grpc::Status HostileCacheManager::OpenSession(grpc::ServerContext* context, const v1::OpenSessionRequest* request,
                                              v1::OpenSessionResponse* response) {
  if (ring_handoff_ == nullptr || !request->has_shared_memory_ring()) {
    return honest_->OpenSession(context, request, response);
  }
  // The ring stays here, where its decisions can be tampered with; the honest service opens the
  // session without one (so the worker, not refused, uses the ring).
  absl::StatusOr<std::shared_ptr<ScoreRing>> ring = AttachOffered(ring_handoff_, request->shared_memory_ring());
  if (!ring.ok()) return ToGrpc(ring.status());
  v1::OpenSessionRequest without_ring = *request;
  without_ring.clear_shared_memory_ring();
  grpc::Status opened = honest_->OpenSession(context, &without_ring, response);
  if (opened.ok()) {
    absl::MutexLock lock(&mutex_);
    rings_[response->session_id()] = *std::move(ring);
  }
  return opened;
}

grpc::Status HostileCacheManager::CloseSession(grpc::ServerContext* context, const v1::CloseSessionRequest* request,
                                               v1::CloseSessionResponse* response) {
  {
    absl::MutexLock lock(&mutex_);
    rings_.erase(request->session_id());
  }
  return honest_->CloseSession(context, request, response);
}

std::shared_ptr<ScoreRing> HostileCacheManager::RingOf(const std::string& session_id) {
  absl::MutexLock lock(&mutex_);
  auto it = rings_.find(session_id);
  return it == rings_.end() ? nullptr : it->second;
}

grpc::Status HostileCacheManager::ServeRing(grpc::ServerContext* context, const v1::ScoreStep& attach,
                                            ScoreRing* ring) {
  v1::ScoreStep slot_step = attach;  // the session's id and secret, presented with every SubmitStep
  v1::ScoreStep* step = &slot_step;
  auto refuse = [ring](uint64_t seq, uint64_t step_number, const absl::Status& status) {
    ring->CompleteDecision(seq, step_number, absl::StatusOr<kv::EvictionDecision>(status)).IgnoreError();
    ring->Close();
    return ToGrpc(status);
  };
  for (uint64_t seq = 0;; ++seq) {
    while (!ring->WaitStep(seq, absl::Milliseconds(50)) || context->IsCancelled()) {
      if (ring->closed() || context->IsCancelled()) return grpc::Status::OK;
    }
    const RingStep header = ring->step(seq);  // copied: the worker could rewrite the slot
    if (absl::Status read = StepFromSlot(*ring, seq, header, step); !read.ok()) return refuse(seq, header.step, read);
    const Breach breach = BreachFor(*step);
    if (breach == Breach::kCutStream) {
      Count(breach);
      ring->Close();
      return grpc::Status::OK;
    }
    v1::EvictionDecision answer;
    grpc::Status decided = honest_->SubmitStep(context, step, &answer);
    absl::StatusOr<kv::EvictionDecision> decision =
        decided.ok() ? kv::DecisionFromProto(answer) : absl::StatusOr<kv::EvictionDecision>(FromGrpc(decided));
    if (!decision.ok()) return refuse(seq, header.step, decision.status());
    WriteRingDecision(ring, seq, header.step, *decision, Count(breach));
    if (Holds(breach)) return HoldUntilCancelled(context);
  }
}

grpc::Status HostileCacheManager::SubmitStep(grpc::ServerContext* context, const v1::ScoreStep* request,
                                             v1::EvictionDecision* response) {
  const Breach breach = BreachFor(*request);
  grpc::Status status = honest_->SubmitStep(context, request, response);
  if (status.ok()) TamperDecision(Count(breach), response);
  return status;
}

grpc::Status HostileCacheManager::StreamScores(grpc::ServerContext* context,
                                               grpc::ServerReaderWriter<v1::EvictionDecision, v1::ScoreStep>* stream) {
  // The stream's first message names the session; every step then goes through the unary SubmitStep.
  v1::ScoreStep message;
  v1::ScoreStep* step = &message;
  std::string session_id, secret;
  while (stream->Read(step)) {
    if (session_id.empty()) session_id = step->session_id(), secret = step->session_secret();
    const bool attaches = step->scores().payload_case() == v1::ScoreTensor::PAYLOAD_NOT_SET &&
                          step->scores().shape_size() == 0;  // "serve me from the ring"
    if (std::shared_ptr<ScoreRing> ring = attaches ? RingOf(session_id) : nullptr; ring != nullptr) {
      return ServeRing(context, *step, ring.get());
    }
    step->set_session_id(session_id);
    step->set_session_secret(secret);
    const Breach breach = BreachFor(*step);
    if (breach == Breach::kCutStream) {
      Count(breach);
      return grpc::Status::OK;
    }
    v1::EvictionDecision decision;
    if (grpc::Status status = honest_->SubmitStep(context, step, &decision); !status.ok()) return status;
    TamperDecision(Count(breach), &decision);
    if (!stream->Write(decision)) break;
    if (breach == Breach::kExtraDecision && !stream->Write(decision)) break;
    if (Holds(breach)) return HoldUntilCancelled(context);
  }
  return grpc::Status::OK;
}

grpc::Status HostileCacheManager::StreamScoreBatches(
    grpc::ServerContext* context, grpc::ServerReaderWriter<v1::DecisionBatch, v1::ScoreBatch>* stream) {
  std::set<std::string> served;
  v1::ScoreBatch batch;
  v1::DecisionBatch answer;
  while (stream->Read(&batch)) {
    const Breach breach = BreachFor(batch);
    if (breach == Breach::kCutStream) {
      Count(breach);
      return grpc::Status::OK;
    }
    answer.Clear();
    if (grpc::Status status = honest_->ServeBatch(batch, &answer, &served); !status.ok()) return status;
    Tamper(Count(breach), &answer);
    if (!stream->Write(answer)) break;
    if (Holds(breach)) return HoldUntilCancelled(context);
  }
  return grpc::Status::OK;
}

HostileCacheManagerStack::HostileCacheManagerStack() {
  manager_ = std::make_unique<SessionManager>(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(),
                                              SessionManagerOptions{});
  service_ = std::make_unique<CacheManagerService>(manager_.get());
  ring_socket_ = a2sf::testing::TempSocketPath("hostile-ring");
  ring_handoff_ = std::move(*RingHandoffServer::Start(ring_socket_, 0600));
  hostile_ = std::make_unique<HostileCacheManager>(service_.get(), ring_handoff_.get());
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
  // The servers go first: their handlers use the services, the ring hand-off and the session manager.
  hostile_server_.reset();
  honest_server_.reset();
  ring_handoff_.reset();
}

}  // namespace a2sf::cachemgr::testing
