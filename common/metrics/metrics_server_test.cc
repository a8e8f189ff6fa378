#include "common/metrics/metrics_server.h"

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

}  // namespace
}  // namespace a2sf
