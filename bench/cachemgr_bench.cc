// Cache-manager throughput at LLaMA-2-7B shape (32 layers x 32 KV heads, budget 819): a real gRPC
// server in this process, reached over TCP loopback and over a Unix socket; N client threads each
// stream one session's steps in steady state (every head full: 820 scores per head per step). Reports
// the per-step round trip (send scores, get the decision) for one session and the aggregate steps/s
// for N concurrent sessions, with fp16 and fp32 scores; then the co-located data plane: the same
// steps handed over in a shared-memory ring (ScoreRing) instead of gRPC messages, next to the
// decision alone (SessionManager::Step in this process on the same scores) as the baseline. The ring
// path includes encoding the engine's fp32 scores into the slot; the gRPC path starts from a message
// already built. With `cuda`, last, the device-resident hand-off (CUDA IPC): a child process exports
// a GPU buffer holding the scores, and steps carry only their header through the ring.
//
//   bazel run -c opt //bench:cachemgr_bench [-- cuda]
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "a2sf/v1/cache_manager.grpc.pb.h"
#include "cachemgr/service/cache_manager_service.h"
#include "cachemgr/store/cpu_score_store.h"
#include "cachemgr/store/cuda_score_store.h"
#include "common/cuda/ipc_child.h"
#include "common/grpc/server.h"
#include "common/float16.h"
#include "common/shm/ring_handoff.h"
#include "common/shm/score_ring.h"

namespace a2sf {
namespace {

constexpr uint32_t kLayers = 32, kHeads = 32, kBudget = 819;

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

v1::ScoreStep MakeStep(uint32_t entries, bool fp16) {
  v1::ScoreStep step;
  step.set_kind(v1::STEP_KIND_TOKEN);
  auto* t = step.mutable_scores();
  t->set_dtype(fp16 ? v1::SCORE_DTYPE_FP16 : v1::SCORE_DTYPE_FP32);
  t->add_shape(kLayers);
  t->add_shape(kHeads);
  t->add_shape(entries);
  const size_t n = size_t{kLayers} * kHeads * entries;
  std::string data(n * (fp16 ? 2 : 4), '\0');
  for (size_t i = 0; i < n; ++i) {
    if (fp16) {
      const uint16_t h = uint16_t(0x1000 + (i * 7919) % 2000);  // small positive values
      std::memcpy(&data[2 * i], &h, 2);
    } else {
      const float f = float((i * 7919) % 2000) * 1e-5f;
      std::memcpy(&data[4 * i], &f, 4);
    }
  }
  t->set_data(std::move(data));
  return step;
}

v1::OpenSessionRequest SevenBSession() {
  v1::OpenSessionRequest open;
  open.mutable_shape()->set_num_layers(kLayers);
  open.mutable_shape()->set_num_kv_heads(kHeads);
  open.mutable_shape()->set_query_heads_per_kv_head(1);
  open.mutable_policy()->set_name("a2sf");
  open.mutable_budget()->set_tokens(kBudget);
  return open;
}

// Opens a session, fills it to the budget, then times `steps` steady-state steps. Returns seconds.
double RunSession(v1::CacheManager::Stub* stub, bool fp16, int steps) {
  const v1::OpenSessionRequest open = SevenBSession();
  v1::OpenSessionResponse opened;
  grpc::ClientContext open_context;
  if (!stub->OpenSession(&open_context, open, &opened).ok()) return -1;
  grpc::ClientContext context;
  auto stream = stub->StreamScores(&context);
  v1::EvictionDecision decision;
  uint64_t step = 0;
  // Ramp up with small payloads of growing length (one step per entry count).
  for (uint32_t entries = 1; entries <= kBudget; ++entries, ++step) {
    v1::ScoreStep s = MakeStep(entries, fp16);
    s.set_step(step);
    s.set_position(step);
    if (step == 0) {
      s.set_session_id(opened.session_id());
      s.set_session_secret(opened.session_secret());
    }
    stream->Write(s);
    stream->Read(&decision);
  }
  v1::ScoreStep steady = MakeStep(kBudget + 1, fp16);
  const double start = Now();
  for (int i = 0; i < steps; ++i, ++step) {
    steady.set_step(step);
    steady.set_position(step);
    if (!stream->Write(steady) || !stream->Read(&decision)) return -1;
  }
  const double elapsed = Now() - start;
  stream->WritesDone();
  stream->Finish().IgnoreError();
  return elapsed;
}


// The decision alone: the same steady-state steps straight into a SessionManager. Returns seconds.
double RunInProcess(cachemgr::SessionManager* manager, bool fp16, int steps) {
  cachemgr::SessionConfig config;
  config.geometry = {kLayers, kHeads};
  config.policy = cachemgr::PolicySpec{"a2sf", 0.3, {}, std::nullopt, std::nullopt};
  config.budget.tokens = kBudget;
  auto info = manager->Open(config);
  const kv::ScoreDType dtype = fp16 ? kv::ScoreDType::kFp16 : kv::ScoreDType::kFp32;
  uint64_t step = 0;
  for (uint32_t entries = 1; entries <= kBudget; ++entries, ++step) {
    const v1::ScoreStep s = MakeStep(entries, fp16);
    manager->Step(info->id, step, step, {dtype, s.scores().data().data(), size_t{kLayers} * kHeads * entries}).IgnoreError();
  }
  const v1::ScoreStep steady = MakeStep(kBudget + 1, fp16);
  const cachemgr::ScoreView view{dtype, steady.scores().data().data(), size_t{kLayers} * kHeads * (kBudget + 1)};
  const double start = Now();
  for (int i = 0; i < steps; ++i, ++step) {
    if (!manager->Step(info->id, step, step, view).ok()) return -1;
  }
  const double elapsed = Now() - start;
  manager->Close(info->id).IgnoreError();
  return elapsed;
}

// The same steps through a shared-memory ring: the "worker" copies the packed scores into a slot and
// publishes it; the decision comes back in the slot. With `device` (CUDA IPC), the scores stay in the
// child process's exported GPU buffer: the slot carries the step header only and the CUDA store
// reads them in place. Returns seconds (-1 on failure, -2 when the device offer was refused).
double RunRing(v1::CacheManager::Stub* stub, const std::string& ring_socket, bool fp16, int steps,
               const cuda_ipc::ExportChild* device = nullptr) {
  const uint32_t heads = kLayers * kHeads;
  auto ring = ScoreRing::Create(2, ScoreRing::SlotBytesFor(uint64_t(heads) * (kBudget + 1) * 4, heads), heads);
  if (!ring.ok()) return -1;
  absl::StatusOr<std::string> handle = OfferRingDescriptor(ring_socket, (*ring)->fd());
  if (!handle.ok()) return -1;
  v1::OpenSessionRequest open = SevenBSession();
  open.mutable_shared_memory_ring()->set_handle(*handle);
  open.mutable_shared_memory_ring()->set_num_slots((*ring)->num_slots());
  open.mutable_shared_memory_ring()->set_slot_bytes((*ring)->slot_bytes());
  if (device != nullptr) {
    v1::DeviceScoresOffer* offer = open.mutable_device_scores();
    offer->set_memory_handle(device->memory_handle);
    offer->set_event_handle(device->event_handle);
    offer->set_buffer_bytes(device->bytes);
    offer->set_dtype(v1::SCORE_DTYPE_FP32);
    offer->set_device_uuid(device->device.uuid);
    offer->set_pci_bus_id(device->device.pci_bus_id);
  }
  v1::OpenSessionResponse opened;
  grpc::ClientContext open_context;
  if (!stub->OpenSession(&open_context, open, &opened).ok()) return -1;
  if (device != nullptr && !opened.device_scores().accepted()) {
    std::fprintf(stderr, "CUDA IPC offer refused: %s\n", opened.device_scores().detail().c_str());
    return -2;
  }
  grpc::ClientContext context;
  auto stream = stub->StreamScores(&context);
  v1::ScoreStep attach;
  attach.set_session_id(opened.session_id());
  attach.set_session_secret(opened.session_secret());
  stream->Write(attach);
  uint64_t seq = 0;
  // As a worker does: the engine's fp32 scores are encoded straight into the slot.
  const v1::ScoreStep fp32_step = MakeStep(kBudget + 1, /*fp16=*/false);
  const float* engine_scores = reinterpret_cast<const float*>(fp32_step.scores().data().data());
  auto one = [&](uint32_t entries) {
    const size_t values = size_t{kLayers} * kHeads * entries;
    if (device == nullptr && fp16) {
      FloatsToHalves(engine_scores, static_cast<uint16_t*>((*ring)->payload(seq)), values);
    } else if (device == nullptr) {
      std::memcpy((*ring)->payload(seq), engine_scores, values * 4);
    }
    RingStep header;
    header.step = seq;
    header.kind = v1::STEP_KIND_TOKEN;
    header.dtype = fp16 ? v1::SCORE_DTYPE_FP16 : v1::SCORE_DTYPE_FP32;
    header.position = uint32_t(seq);
    header.num_dims = 3;
    header.shape[0] = kLayers;
    header.shape[1] = kHeads;
    header.shape[2] = entries;
    header.payload_bytes = values * (fp16 ? 2 : 4);
    if (device != nullptr) {
      (*ring)->PublishDeviceStep(seq, header);
    } else {
      (*ring)->Publish(seq, header);
    }
    const bool ok = (*ring)->WaitDecision(seq, absl::Seconds(10)) && (*ring)->decision(seq).code == 0;
    ++seq;
    return ok;
  };
  for (uint32_t entries = 1; entries <= kBudget; ++entries) one(entries);
  const double start = Now();
  for (int i = 0; i < steps; ++i) {
    if (!one(kBudget + 1)) return -1;
  }
  const double elapsed = Now() - start;
  (*ring)->Close();
  stream->WritesDone();
  stream->Finish().IgnoreError();
  return elapsed;
}

}  // namespace
}  // namespace a2sf

int main(int argc, char** argv) {
  using namespace a2sf;
  // The CUDA IPC row's exporting process is this binary again: it holds the steady-state fp32 scores.
  cuda_ipc::RunAsExportChildIfAsked([] {
    const v1::ScoreStep step = MakeStep(kBudget + 1, /*fp16=*/false);
    const float* values = reinterpret_cast<const float*>(step.scores().data().data());
    return std::vector<float>(values, values + size_t{kLayers} * kHeads * (kBudget + 1));
  });
  // `cachemgr_bench cuda`: the CUDA score store (needs a GPU); default: the CPU store on 2 threads.
  std::unique_ptr<cachemgr::ScoreStore> store = std::make_unique<cachemgr::CpuScoreStore>(2);
  if (argc > 1 && std::string(argv[1]) == "cuda") {
    auto cuda = cachemgr::CudaScoreStore::Create();
    if (!cuda.ok()) {
      std::fprintf(stderr, "cuda store: %s\n", std::string(cuda.status().message()).c_str());
      return 1;
    }
    store = std::move(*cuda);
  }
  std::printf("score store: %s\n", store->backend().c_str());
  cachemgr::SessionManager manager(std::move(store), &cachemgr::PolicyRegistry::Builtin(), {});
  const std::string socket = "/tmp/a2sf_cachemgr_bench-" + std::to_string(getpid()) + ".sock";
  auto ring_handoff = std::move(*RingHandoffServer::Start(RingSocketPath(socket), 0600));
  cachemgr::CacheManagerServiceOptions service_options;
  service_options.ring_handoff = ring_handoff.get();
  cachemgr::CacheManagerService service(&manager, service_options);
  ServerOptions options;
  options.listen_addresses = {"127.0.0.1:0", "unix:" + socket};
  options.plaintext = true;
  auto server = std::move(*RunningServer::Start(options, {&service}));
  ChannelOptions channel_options;
  channel_options.plaintext = true;
  std::printf("%-8s %-5s %8s %14s %14s %10s\n", "transport", "dtype", "sessions", "ms per step", "steps/s total",
              "MB/step");
  for (const char* transport : {"unix", "tcp"}) {
    const std::string target = std::string(transport) == "unix" ? "unix:" + socket : server->dial_address(0);
    for (bool fp16 : {true, false}) {
      for (int sessions : {1, 4}) {
        const int steps = 40;
        std::vector<double> seconds(sessions);
        std::vector<std::thread> threads;
        for (int s = 0; s < sessions; ++s) {
          threads.emplace_back([&, s] {
            auto channel = *MakeChannel(target, channel_options);  // one connection per session
            auto stub = v1::CacheManager::NewStub(channel);
            seconds[s] = RunSession(stub.get(), fp16, steps);
          });
        }
        for (auto& t : threads) t.join();
        double worst = 0;
        for (double v : seconds) worst = std::max(worst, v);
        const double mb = double(kLayers) * kHeads * (kBudget + 1) * (fp16 ? 2 : 4) / 1e6;
        std::printf("%-8s %-5s %8d %14.3f %14.1f %10.2f\n", transport, fp16 ? "fp16" : "fp32", sessions,
                    worst / steps * 1e3, sessions * steps / worst, mb);
      }
    }
  }
  // Co-located: decision alone vs shared-memory ring vs gRPC over the Unix socket, one session.
  std::printf("\nco-located, one session, %u x %u x %u per step\n", kLayers, kHeads, kBudget + 1);
  std::printf("%-26s %-5s %12s %16s\n", "path", "dtype", "ms per step", "hand-off ms");
  auto channel = *MakeChannel("unix:" + socket, channel_options);
  auto stub = v1::CacheManager::NewStub(channel);
  for (bool fp16 : {true, false}) {
    // Interleaved repeats, best of each: this machine's noise is larger than some of the differences.
    const int steps = 60;
    double decision = 1e9, ring = 1e9, grpc_unix = 1e9;
    for (int repeat = 0; repeat < 3; ++repeat) {
      decision = std::min(decision, RunInProcess(&manager, fp16, steps) / steps * 1e3);
      ring = std::min(ring, RunRing(stub.get(), RingSocketPath(socket), fp16, steps) / steps * 1e3);
      grpc_unix = std::min(grpc_unix, RunSession(stub.get(), fp16, steps) / steps * 1e3);
    }
    const char* dtype = fp16 ? "fp16" : "fp32";
    std::printf("%-26s %-5s %12.3f %16s\n", "decision only (baseline)", dtype, decision, "-");
    std::printf("%-26s %-5s %12.3f %16.3f\n", "shared-memory ring", dtype, ring, ring - decision);
    std::printf("%-26s %-5s %12.3f %16.3f\n", "gRPC over Unix socket", dtype, grpc_unix, grpc_unix - decision);
  }
  if (manager.store().backend() == "cuda") {
    // Device-resident hand-off: the scores are written by another process (as a worker's engine
    // would) and read in place from its exported buffer; hand-off = this minus the fp32 decision alone
    // (whose scores are uploaded from the host).
    absl::StatusOr<std::unique_ptr<cuda_ipc::ExportChild>> child = cuda_ipc::StartExportChild();
    if (!child.ok()) {
      std::printf("%-26s %-5s unavailable: %s\n", "CUDA IPC (device scores)", "fp32",
                  std::string(child.status().message()).c_str());
    } else {
      const int steps = 60;
      double decision = 1e9, ipc = 1e9;
      for (int repeat = 0; repeat < 3; ++repeat) {
        decision = std::min(decision, RunInProcess(&manager, false, steps) / steps * 1e3);
        const double seconds = RunRing(stub.get(), RingSocketPath(socket), false, steps, child->get());
        if (seconds < 0) {
          ipc = -1;
          break;
        }
        ipc = std::min(ipc, seconds / steps * 1e3);
      }
      if (ipc < 0) {
        std::printf("%-26s %-5s failed (see above)\n", "CUDA IPC (device scores)", "fp32");
        server->Shutdown(absl::ZeroDuration());
        return 1;
      }
      std::printf("%-26s %-5s %12.3f %16.3f\n", "CUDA IPC (device scores)", "fp32", ipc, ipc - decision);
    }
  }
  server->Shutdown(absl::ZeroDuration());
  return 0;
}
