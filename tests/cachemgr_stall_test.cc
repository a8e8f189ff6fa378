// A cache manager that stops answering must not freeze the worker's jobs. A real a2sf-cachemgr
// process is stopped with SIGSTOP mid-job (its connections stay open, so nothing looks broken):
//   - the per-step decision deadline fails the job with DEADLINE_EXCEEDED, or continues it in-process,
//     within the deadline, on inline gRPC scores (the worker's one batch stream, and a StreamScores
//     stream per session with --batch_scores=false) and on the shared-memory ring;
//   - without a deadline, gRPC keepalive still finds the stopped peer and the job fails UNAVAILABLE;
//   - the worker's health is NOT_SERVING while its cache manager does not answer (failure mode fail)
//     and SERVING again once it does.
// Argument: the path of the a2sf-cachemgr binary.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/testing/temp_socket.h"
#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "common/grpc/server.h"
#include "common/shm/ring_handoff.h"
#include "gtest/gtest.h"
#include "worker/service/cache_manager_watch.h"
#include "worker/service/generation_service.h"
#include "worker/testing/fixtures.h"
#include "worker/testing/local_stack.h"

namespace a2sf {
namespace {

// An a2sf-cachemgr child process on 127.0.0.1:<free port> and a unique Unix socket.
class CacheManagerProcess {
 public:
  CacheManagerProcess() : socket_(a2sf::testing::TempSocketPath("stall")) {}
  ~CacheManagerProcess() { Kill(); }

  void Start() {
    const std::string binary = ::testing::internal::GetArgvs().at(1);
    const std::string port_file = absl::StrCat(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp",
                                               "/cachemgr-", getpid(), ".port");
    unlink(port_file.c_str());
    pid_ = fork();
    if (pid_ == 0) {
      const std::string port_flag = "--port_file=" + port_file;
      const std::string socket_flag = "--unix_socket=" + socket_;
      execl(binary.c_str(), binary.c_str(), "--listen=127.0.0.1:0", "--plaintext", socket_flag.c_str(),
            port_flag.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 300 && port_ == 0; ++i) {
      std::ifstream in(port_file);
      if (!(in >> port_)) port_ = 0;
      if (port_ == 0) absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_NE(port_, 0) << "the cache manager did not start";
  }
  void Stop() { kill(pid_, SIGSTOP); }
  void Continue() { kill(pid_, SIGCONT); }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    port_ = 0;
  }
  std::string tcp_address() const { return absl::StrCat("127.0.0.1:", port_); }
  std::string unix_address() const { return "unix:" + socket_; }
  std::string ring_socket() const { return RingSocketPath(socket_); }

 private:
  std::string socket_;
  pid_t pid_ = -1;
  int port_ = 0;
};

struct WorkerSetup {
  bool fallback = false;
  bool shared_memory = false;
  bool batch_scores = true;  // inline scores on the worker's batch stream; false: a stream per session
  absl::Duration decision_timeout = absl::Milliseconds(500);
  absl::Duration keepalive_time = absl::ZeroDuration();
};

// A worker in this process using `cachemgr` (inline gRPC over TCP, or the shared-memory ring beside its
// Unix socket).
class Worker : public worker::testing::LocalWorker {
 public:
  Worker(const CacheManagerProcess& cachemgr, const WorkerSetup& setup)
      : Worker(CacheManagerChannel(cachemgr, setup), cachemgr, setup) {}
  std::shared_ptr<grpc::Channel> cache_manager_channel() { return channel_; }
  std::shared_ptr<grpc::Channel> worker_channel() { return channel(); }

 private:
  Worker(std::shared_ptr<grpc::Channel> to_cachemgr, const CacheManagerProcess& cachemgr, const WorkerSetup& setup)
      : LocalWorker(Options(to_cachemgr, cachemgr, setup)), channel_(std::move(to_cachemgr)) {}
  static std::shared_ptr<grpc::Channel> CacheManagerChannel(const CacheManagerProcess& cachemgr,
                                                            const WorkerSetup& setup) {
    ChannelOptions to_cachemgr;
    to_cachemgr.plaintext = true;
    to_cachemgr.keepalive_time = setup.keepalive_time;
    to_cachemgr.keepalive_timeout = absl::Milliseconds(500);
    return *MakeChannel(setup.shared_memory ? cachemgr.unix_address() : cachemgr.tcp_address(), to_cachemgr);
  }
  static worker::WorkerOptions Options(std::shared_ptr<grpc::Channel> to_cachemgr, const CacheManagerProcess& cachemgr,
                                       const WorkerSetup& setup) {
    worker::WorkerOptions options;
    options.cache_manager = std::move(to_cachemgr);
    options.fallback_in_process = setup.fallback;
    options.batch_scores = setup.batch_scores;
    if (setup.shared_memory) options.ring_socket = cachemgr.ring_socket();
    options.decision_timeout = setup.decision_timeout;
    options.cache_manager_wait = absl::Seconds(3);
    return options;
  }

  std::shared_ptr<grpc::Channel> channel_;
};

v1::GenerateRequest LongJob() {
  v1::GenerateRequest request;
  request.set_text("Lily and Tom went to the park");
  request.set_max_tokens(480);
  request.mutable_stop()->set_stop_on_eos(false);
  request.mutable_policy()->set_name("a2sf");
  request.mutable_policy()->set_alpha(0.3);
  request.mutable_budget()->set_tokens(16);
  return request;
}

struct StalledJob {
  absl::StatusOr<client::GenerationResult> result;
  absl::Duration after_stop;       // from the SIGSTOP to the job's end
  absl::Duration longest_silence;  // between two token chunks after the SIGSTOP
};

// Runs LongJob and stops the cache manager once 20 tokens have streamed.
StalledJob RunAndStall(Worker& worker, CacheManagerProcess& cachemgr) {
  size_t seen = 0;
  absl::Time stopped = absl::InfiniteFuture(), last = absl::InfinitePast();
  absl::Duration longest = absl::ZeroDuration();
  StalledJob job;
  job.result = worker.client().Generate(
      LongJob(),
      [&](const v1::GeneratedTokens& tokens) {
        const absl::Time now = absl::Now();
        if (stopped != absl::InfiniteFuture()) longest = std::max(longest, now - last);
        last = now;
        seen += size_t(tokens.ids_size());
        if (seen >= 20 && stopped == absl::InfiniteFuture()) {
          cachemgr.Stop();
          stopped = last = absl::Now();
        }
      },
      0, absl::Seconds(15));
  job.after_stop = absl::Now() - stopped;
  job.longest_silence = longest;
  cachemgr.Continue();
  EXPECT_NE(stopped, absl::InfiniteFuture()) << "the job ended before the cache manager could be stopped";
  return job;
}

// The routes a job's scores can take to the cache manager.
struct Route {
  const char* name;
  bool shared_memory;
  bool batch_scores;
};
constexpr Route kRoutes[] = {
    {"inline gRPC, the worker's batch stream", false, true},
    {"inline gRPC, a stream per session (--batch_scores=false)", false, false},
    {"shared-memory ring", true, true},
};

WorkerSetup SetupFor(const Route& route, bool fallback) {
  WorkerSetup setup;
  setup.fallback = fallback;
  setup.shared_memory = route.shared_memory;
  setup.batch_scores = route.batch_scores;
  return setup;
}

class CacheManagerStallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    A2SF_REQUIRE_FIXTURES();
    ASSERT_GE(::testing::internal::GetArgvs().size(), 2u) << "give the a2sf-cachemgr binary as the argument";
    cachemgr_.Start();
  }
  CacheManagerProcess cachemgr_;
};

TEST_F(CacheManagerStallTest, AStoppedCacheManagerFailsTheJobWithDeadlineExceededWithinTheDeadline) {
  for (const Route& route : kRoutes) {
    SCOPED_TRACE(route.name);
    Worker worker(cachemgr_, SetupFor(route, /*fallback=*/false));
    StalledJob job = RunAndStall(worker, cachemgr_);
    ASSERT_FALSE(job.result.ok());
    EXPECT_EQ(job.result.status().code(), absl::StatusCode::kDeadlineExceeded) << job.result.status();
    EXPECT_NE(job.result.status().message().find("decision deadline"), std::string::npos) << job.result.status();
    // 500 ms deadline; the rest is slack for a loaded machine, far below the 15 s the client waits.
    EXPECT_LT(job.after_stop, absl::Seconds(3));
    // Once the cache manager runs again, the next job is served remotely.
    auto next = worker.client().Generate(LongJob(), nullptr, 0, absl::Seconds(30));
    ASSERT_TRUE(next.ok()) << next.status();
    EXPECT_EQ(next->finished.policy_location(), v1::POLICY_LOCATION_REMOTE);
  }
}

TEST_F(CacheManagerStallTest, AStoppedCacheManagerIsTakenOverInProcessWithinTheDeadline) {
  for (const Route& route : kRoutes) {
    SCOPED_TRACE(route.name);
    Worker worker(cachemgr_, SetupFor(route, /*fallback=*/true));
    StalledJob job = RunAndStall(worker, cachemgr_);
    ASSERT_TRUE(job.result.ok()) << job.result.status();
    EXPECT_EQ(job.result->ids.size(), 480u);
    EXPECT_EQ(job.result->finished.policy_location(), v1::POLICY_LOCATION_FALLBACK_IN_PROCESS);
    EXPECT_LT(job.longest_silence, absl::Seconds(2)) << "tokens stopped for longer than the deadline allows";
    EXPECT_LT(job.after_stop, absl::Seconds(3));
  }
}

TEST_F(CacheManagerStallTest, WithoutADeadlineKeepaliveFindsTheStoppedPeer) {
  WorkerSetup setup;
  setup.decision_timeout = absl::InfiniteDuration();
  setup.keepalive_time = absl::Milliseconds(1500);  // above the servers' 1 s minimum ping interval
  Worker worker(cachemgr_, setup);
  StalledJob job = RunAndStall(worker, cachemgr_);
  ASSERT_FALSE(job.result.ok());
  EXPECT_EQ(job.result.status().code(), absl::StatusCode::kUnavailable) << job.result.status();
  EXPECT_LT(job.after_stop, absl::Seconds(6));
}

std::string WorkerHealth(Worker& worker) {
  absl::StatusOr<std::string> health = client::CheckHealth(worker.worker_channel(), absl::Seconds(2));
  return health.ok() ? *health : health.status().ToString();
}

// Polls the worker's health until it reads `want` (or 10 s pass: reconnecting backs off).
std::string AwaitHealth(Worker& worker, const std::string& want) {
  std::string seen;
  for (absl::Time end = absl::Now() + absl::Seconds(10); absl::Now() < end; absl::SleepFor(absl::Milliseconds(50))) {
    seen = WorkerHealth(worker);
    if (seen == want) break;
  }
  return seen;
}

TEST_F(CacheManagerStallTest, WorkerHealthFollowsItsCacheManagerInFailMode) {
  Worker worker(cachemgr_, {/*fallback=*/false, /*shared_memory=*/true});
  RunningServer* server = worker.server();
  worker::CacheManagerWatch watch(worker.cache_manager_channel(), absl::Milliseconds(200),
                                  [server](bool reachable, const absl::Status&) { server->SetServing(reachable); });
  EXPECT_EQ(AwaitHealth(worker, "SERVING"), "SERVING");
  cachemgr_.Stop();  // alive but not answering
  EXPECT_EQ(AwaitHealth(worker, "NOT_SERVING"), "NOT_SERVING");
  cachemgr_.Continue();
  EXPECT_EQ(AwaitHealth(worker, "SERVING"), "SERVING");
  cachemgr_.Kill();  // gone
  EXPECT_EQ(AwaitHealth(worker, "NOT_SERVING"), "NOT_SERVING");
  cachemgr_.Start();  // back on the same Unix socket
  EXPECT_EQ(AwaitHealth(worker, "SERVING"), "SERVING");
  EXPECT_TRUE(worker.client().Generate(LongJob(), nullptr, 0, absl::Seconds(30)).ok());
}

}  // namespace
}  // namespace a2sf
