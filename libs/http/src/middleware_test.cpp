#include "smart/http/middleware.hpp"

#include <gtest/gtest.h>

namespace smart::http {
namespace {

// The client address a request from `peer` with X-Forwarded-For `xff` is given.
std::string ClientOf(const Middleware& m, const std::string& peer, const std::string& xff) {
  Request req;
  req.remote_address = peer;
  if (!xff.empty()) req.headers.Add("X-Forwarded-For", xff);
  std::string seen;
  m(req, [&](Request& r) {
    seen = r.remote_address;
    return Response{};
  });
  return seen;
}

TEST(ClientAddress, TrustsForwardedForOnlyFromItsProxies) {
  auto m = ClientAddress({"10.0.0.0/8", "192.168.1.7", "fd00::/8"});
  ASSERT_TRUE(m);
  // From a proxy: the rightmost address that is not a proxy.
  EXPECT_EQ(ClientOf(*m, "10.1.2.3", "203.0.113.9"), "203.0.113.9");
  EXPECT_EQ(ClientOf(*m, "10.1.2.3", "198.51.100.1, 203.0.113.9, 10.9.9.9"), "203.0.113.9")
      << "the left entries are the client's own word";
  EXPECT_EQ(ClientOf(*m, "192.168.1.7", " 203.0.113.9:5123 "), "203.0.113.9") << "a port and spaces";
  EXPECT_EQ(ClientOf(*m, "fd00::1", "[2001:db8::5]:443"), "2001:db8::5");
  EXPECT_EQ(ClientOf(*m, "10.1.2.3", "10.2.2.2, 10.3.3.3"), "10.2.2.2") << "proxies all the way: the farthest";
  EXPECT_EQ(ClientOf(*m, "10.1.2.3", "203.0.113.9, not-an-address"), "10.1.2.3")
      << "a garbled entry: the hop that passed it on";
  EXPECT_EQ(ClientOf(*m, "10.1.2.3", ""), "10.1.2.3");
  // From anyone else: ignored.
  EXPECT_EQ(ClientOf(*m, "203.0.113.50", "1.1.1.1"), "203.0.113.50") << "a client cannot choose its address";
  EXPECT_EQ(ClientOf(*m, "192.168.1.8", "1.1.1.1"), "192.168.1.8") << "one address trusted, not its neighbour";
  EXPECT_EQ(ClientOf(*m, "11.0.0.1", "1.1.1.1"), "11.0.0.1") << "outside the /8";

  auto none = ClientAddress({});
  ASSERT_TRUE(none);
  EXPECT_EQ(ClientOf(*none, "10.1.2.3", "1.1.1.1"), "10.1.2.3") << "no proxies trusted by default";
}

TEST(ClientAddress, RefusesWhatIsNotAnAddressOrRange) {
  for (const char* bad :
       {"", "localhost", "10.0.0.0/33", "10.0.0.0/", "::1/129", "1.2.3.4/-1", "1.2.3", "10.0.0.0/8x"}) {
    auto m = ClientAddress({bad});
    ASSERT_FALSE(m) << bad;
    EXPECT_EQ(m.error().code, "invalid_trusted_proxy");
    EXPECT_NE(m.error().message.find("http.trusted_proxies"), std::string::npos);
  }
  EXPECT_TRUE(ClientAddress({"0.0.0.0/0", "::/0", "127.0.0.1/32"}));
}

}  // namespace
}  // namespace smart::http
