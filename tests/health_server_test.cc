// A server built with the project's standard setup answers grpc.health.v1 and refuses to start
// without an explicit choice between TLS and plaintext.
#include <memory>

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
  const std::string path = "/tmp/a2sf_health_test_" + std::to_string(getpid()) + ".sock";
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

TEST(HealthServer, NoListenAddressIsAnError) {
  ServerOptions options;
  options.plaintext = true;
  EXPECT_EQ(RunningServer::Start(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace a2sf
