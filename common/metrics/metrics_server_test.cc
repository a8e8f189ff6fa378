#include "common/metrics/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace a2sf {
namespace {

TEST(MetricsServer, MalformedAddressesAreRefusedBeforeBinding) {
  for (const char* address : {"999.1.1.1:1", "127.0.0.1", ":9090", "127.0.0.1:70000", "127.0.0.1:x", "[::1:9090",
                              "[zz]:9090", "bad host:9090"}) {
    auto server = MetricsServer::Start(address);
    ASSERT_FALSE(server.ok()) << address;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_NE(server.status().message().find(address), std::string::npos) << server.status();
  }
}

TEST(MetricsServer, ServesOnAFreePortAndStartIfAskedHonoursAnEmptyAddress) {
  auto server = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_GT((*server)->port(), 0);
  auto none = MetricsServer::StartIfAsked("");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
  EXPECT_EQ(MetricsServer::StartIfAsked("localhost:99999").status().code(), absl::StatusCode::kInvalidArgument);
}

// A TCP connection to 127.0.0.1:port, reads timing out after `timeout_s`; -1 on failure.
int Connect(int port, int timeout_s) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Clients that open connections and never finish a request do not hold the scrape: with civetweb's
// two threads (prometheus-cpp's default) two of them held it for 30 s (a hostile-client probe).
TEST(MetricsServer, IdleConnectionsDoNotHoldAScrape) {
  auto server = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) {
    const int fd = Connect(port, 1);
    ASSERT_GE(fd, 0);
    const std::string partial = "GET /metrics HTTP/1.1\r\nHost: x\r\n";  // never finished
    ASSERT_EQ(send(fd, partial.data(), partial.size(), 0), ssize_t(partial.size()));
    idle.push_back(fd);
  }
  usleep(200 * 1000);  // the idle ones are accepted first
  const int fd = Connect(port, 4);  // under civetweb's 5 s request timeout: a free thread must answer
  ASSERT_GE(fd, 0);
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), ssize_t(request.size()));
  char buffer[64] = {};
  const ssize_t got = recv(fd, buffer, sizeof(buffer) - 1, 0);
  close(fd);
  for (int i : idle) close(i);
  ASSERT_GT(got, 0) << "no answer within 4 s while 4 connections sat idle";
  EXPECT_EQ(std::string(buffer).rfind("HTTP/1.1 200", 0), 0u) << buffer;
}

}  // namespace
}  // namespace a2sf
