// A server built with the project's standard setup answers grpc.health.v1 and refuses to start
// without an explicit choice between TLS and plaintext.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <memory>

#include "common/testing/temp_socket.h"
#include "common/grpc/server.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"

namespace a2sf {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

TEST(HealthServer, EmptyServerOnEphemeralPortReportsServing) {
  ServerOptions options;
  options.listen_addresses = {"127.0.0.1:0"};
  options.plaintext = true;
  absl::StatusOr<std::unique_ptr<RunningServer>> server = RunningServer::Start(options, {});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->bound_port(0);
  ASSERT_GT(port, 0);

  ChannelOptions channel_options;
  channel_options.plaintext = true;
  auto channel = MakeChannel((*server)->dial_address(0), channel_options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto stub = Health::NewStub(*channel);

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  HealthCheckRequest request;
  HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  // After shutdown begins the server reports NOT_SERVING or stops answering; it never lies.
  (*server)->SetServing(false);
  grpc::ClientContext context2;
  context2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  status = stub->Check(&context2, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);

  // An unknown service name is NOT_FOUND, as the health protocol specifies.
  grpc::ClientContext context3;
  HealthCheckRequest unknown;
  unknown.set_service("no.such.Service");
  status = stub->Check(&context3, unknown, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(HealthServer, UnixSocketListener) {
  const std::string path = a2sf::testing::TempSocketPath("health");
  ServerOptions options;
  options.listen_addresses = {"unix:" + path};
  absl::StatusOr<std::unique_ptr<RunningServer>> server = RunningServer::Start(options, {});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = MakeChannel("unix:" + path, ChannelOptions{});
  ASSERT_TRUE(channel.ok());
  auto stub = Health::NewStub(*channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  HealthCheckResponse response;
  ASSERT_TRUE(stub->Check(&context, HealthCheckRequest(), &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
}

TEST(HealthServer, RefusesToStartWithoutTlsOrExplicitPlaintext) {
  ServerOptions options;
  options.listen_addresses = {"127.0.0.1:0"};
  absl::StatusOr<std::unique_ptr<RunningServer>> server = RunningServer::Start(options, {});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(server.status().message().find("plaintext"), std::string::npos) << server.status();
}

TEST(HealthServer, MissingCertificateFileIsNamed) {
  ServerOptions options;
  options.listen_addresses = {"127.0.0.1:0"};
  options.tls.cert_chain_path = "/nonexistent/server.pem";
  options.tls.private_key_path = "/nonexistent/server.key";
  absl::StatusOr<std::unique_ptr<RunningServer>> server = RunningServer::Start(options, {});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(server.status().message().find("/nonexistent/server.pem"), std::string::npos);
}

TEST(HealthServer, OverlongUnixSocketPathIsRefusedWithAMessage) {
  ServerOptions options;
  options.listen_addresses = {"unix:/tmp/" + std::string(120, 'x') + ".sock"};
  absl::StatusOr<std::unique_ptr<RunningServer>> server = RunningServer::Start(options, {});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(server.status().message().find("107"), std::string::npos) << server.status();
}

// Issue 11, finding 8: the socket path is claimed, never blindly unlinked, and gets an explicit mode.
TEST(HealthServer, UnixSocketPathIsClaimedSafelyAndGetsItsMode) {
  const std::string path = a2sf::testing::TempSocketPath("claim");
  ServerOptions options;
  options.listen_addresses = {"unix:" + path};
  // A regular file at the path is refused and left as it was.
  { std::ofstream(path) << "precious"; }
  absl::StatusOr<std::unique_ptr<RunningServer>> refused = RunningServer::Start(options, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("not a socket"), std::string::npos) << refused.status();
  std::string kept;
  std::getline(std::ifstream(path), kept);
  EXPECT_EQ(kept, "precious");
  ASSERT_EQ(unlink(path.c_str()), 0);
  // The socket is created with the default mode 0660, whatever the umask.
  absl::StatusOr<std::unique_ptr<RunningServer>> first = RunningServer::Start(options, {});
  ASSERT_TRUE(first.ok()) << first.status();
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  // A second server does not steal the socket a live one answers on.
  absl::StatusOr<std::unique_ptr<RunningServer>> second = RunningServer::Start(options, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("already answers"), std::string::npos) << second.status();
  auto channel = MakeChannel("unix:" + path, ChannelOptions{});
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  HealthCheckResponse response;
  EXPECT_TRUE(Health::NewStub(*channel)->Check(&context, HealthCheckRequest(), &response).ok());
  (*first)->Shutdown(absl::ZeroDuration());
  (*first)->Wait();
  first->reset();
  // A stale socket (bound, its server gone) is replaced by the next server, with the asked mode.
  unlink(path.c_str());
  const int stale = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  ASSERT_EQ(bind(stale, reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0);
  close(stale);
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  ASSERT_TRUE(S_ISSOCK(st.st_mode));
  options.unix_socket_mode = 0600;
  absl::StatusOr<std::unique_ptr<RunningServer>> third = RunningServer::Start(options, {});
  ASSERT_TRUE(third.ok()) << third.status();
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(HealthServer, NoListenAddressIsAnError) {
  ServerOptions options;
  options.plaintext = true;
  EXPECT_EQ(RunningServer::Start(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace a2sf
