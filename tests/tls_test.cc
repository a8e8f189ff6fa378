// TLS and mutual TLS with a throw-away CA made by openssl at test time: a client without the right CA
// or client certificate is refused, one with them is served.
#include <cstdlib>
#include <string>

#include "client/client.h"
#include "common/grpc/server.h"
#include "gtest/gtest.h"

namespace a2sf {
namespace {

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/tls");
    const std::string d = *dir_;
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "set -e; mkdir -p " + d + "; cd " + d + ";" +
        "openssl req -x509 " + key + " -keyout ca.key -out ca.pem -days 1 -subj /CN=a2sf-test-ca 2>/dev/null;" +
        "openssl req -x509 " + key + " -keyout rogue-ca.key -out rogue-ca.pem -days 1 -subj /CN=rogue 2>/dev/null;" +
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext;" +
        "openssl req " + key + " -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null;" +
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.ext 2>/dev/null;" +
        "openssl req " + key + " -keyout client.key -out client.csr -subj /CN=client 2>/dev/null;" +
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 1 2>/dev/null;" +
        "openssl req " + key + " -keyout rogue.key -out rogue.csr -subj /CN=rogue 2>/dev/null;" +
        "openssl x509 -req -in rogue.csr -CA rogue-ca.pem -CAkey rogue-ca.key -CAcreateserial -out rogue.pem -days 1 2>/dev/null";
    openssl_ok_ = std::system(("bash -c \"" + script + "\"").c_str()) == 0;
  }

  std::string path(const std::string& name) const { return *dir_ + "/" + name; }

  std::unique_ptr<RunningServer> Start(bool mutual) {
    ServerOptions options;
    options.listen_addresses = {"127.0.0.1:0"};
    options.tls = {path("server.pem"), path("server.key"), mutual ? path("ca.pem") : ""};
    auto server = RunningServer::Start(options, {});
    EXPECT_TRUE(server.ok()) << server.status();
    return std::move(*server);
  }

  absl::StatusOr<std::string> Check(const RunningServer& server, ChannelOptions options) {
    options.tls_server_name_override = "localhost";
    auto channel = MakeChannel(server.dial_address(0), options);
    if (!channel.ok()) return channel.status();
    return client::CheckHealth(*channel, absl::Seconds(5));
  }

  static std::string* dir_;
  static bool openssl_ok_;
};

std::string* TlsTest::dir_ = nullptr;
bool TlsTest::openssl_ok_ = false;

#define REQUIRE_OPENSSL() \
  if (!openssl_ok_) GTEST_SKIP() << "openssl could not make a test CA (is the openssl package installed?)"

TEST_F(TlsTest, ServerCertificateIsVerifiedAgainstTheCa) {
  REQUIRE_OPENSSL();
  auto server = Start(/*mutual=*/false);
  ChannelOptions trusted;
  trusted.ca_cert_path = path("ca.pem");
  EXPECT_EQ(*Check(*server, trusted), "SERVING");
  ChannelOptions wrong_ca;
  wrong_ca.ca_cert_path = path("rogue-ca.pem");
  EXPECT_EQ(Check(*server, wrong_ca).status().code(), absl::StatusCode::kUnavailable);
  ChannelOptions plaintext;
  plaintext.plaintext = true;
  EXPECT_FALSE(Check(*server, plaintext).ok());
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutTheRightCertificate) {
  REQUIRE_OPENSSL();
  auto server = Start(/*mutual=*/true);
  ChannelOptions no_cert;
  no_cert.ca_cert_path = path("ca.pem");
  EXPECT_FALSE(Check(*server, no_cert).ok());
  ChannelOptions rogue = no_cert;
  rogue.client_cert_chain_path = path("rogue.pem");
  rogue.client_private_key_path = path("rogue.key");
  EXPECT_FALSE(Check(*server, rogue).ok());
  ChannelOptions good = no_cert;
  good.client_cert_chain_path = path("client.pem");
  good.client_private_key_path = path("client.key");
  EXPECT_EQ(*Check(*server, good), "SERVING");
}

TEST_F(TlsTest, MissingKeyOrCertificateIsAClearError) {
  REQUIRE_OPENSSL();
  ServerOptions options;
  options.listen_addresses = {"127.0.0.1:0"};
  options.tls.cert_chain_path = path("server.pem");
  auto server = RunningServer::Start(options, {});
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("private key"), std::string::npos);
  ChannelOptions missing;
  missing.ca_cert_path = path("nope.pem");
  EXPECT_EQ(MakeChannel("127.0.0.1:1", missing).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace a2sf
