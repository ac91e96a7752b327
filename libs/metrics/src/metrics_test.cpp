#include "smart/metrics/metrics.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace smart::metrics {
namespace {

TEST(Metrics, CounterFamilyRendersLabels) {
  Registry r;
  auto& f = r.AddCounter("http_requests_total", "Requests.", {"method", "route", "status"});
  f.WithLabels({"GET", "/health", "200"}).Inc();
  f.WithLabels({"GET", "/health", "200"}).Inc(2);
  f.WithLabels({"POST", "/a\"b", "400"}).Inc();
  std::string text = r.Render();
  EXPECT_NE(text.find("# TYPE http_requests_total counter"), std::string::npos);
  EXPECT_NE(text.find("http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("route=\"/a\\\"b\""), std::string::npos) << text;
}

TEST(Metrics, HistogramIsCumulative) {
  Registry r;
  auto& h = r.AddHistogram("lat_seconds", "Latency.", {}, {0.1, 1}).WithLabels({});
  h.Observe(0.05);
  h.Observe(0.5);
  h.Observe(5);
  std::string text = r.Render();
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_count 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_sum 5.55\n"), std::string::npos) << text;
}

TEST(Metrics, ConcurrentIncrementsAreExact) {
  Registry r;
  auto& c = r.AddCounter("n_total", "N.").WithLabels({});
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 100000; ++i) c.Inc();
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.Value(), 400000u);
}

TEST(Metrics, ProcessCollector) {
  Registry r;
  AddProcessCollector(r, "1.2.3", "abc123");
  std::string text = r.Render();
  for (const char* name : {"process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
                           "process_start_time_seconds "}) {
    EXPECT_NE(text.find(std::string("\n") + name), std::string::npos) << name;
  }
  EXPECT_NE(text.find("smart_build_info{version=\"1.2.3\",commit=\"abc123\"} 1"), std::string::npos);
  // Resident memory of a running test is well above zero.
  auto pos = text.find("\nprocess_resident_memory_bytes ");
  EXPECT_GT(std::stod(text.substr(pos + 31)), 1e6);
}

}  // namespace
}  // namespace smart::metrics
