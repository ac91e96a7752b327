#include "smart/metrics/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace smart::metrics {
namespace {

void AppendNumber(std::string& out, double v) {
  if (std::isinf(v)) {
    out.append(v > 0 ? "+Inf" : "-Inf");
    return;
  }
  if (std::isnan(v)) {
    out.append("NaN");
    return;
  }
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void AppendLabelValue(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\')
      out.append("\\\\");
    else if (c == '"')
      out.append("\\\"");
    else if (c == '\n')
      out.append("\\n");
    else
      out.push_back(c);
  }
}

void AppendLabels(std::string& out, const std::vector<std::string>& names, const std::vector<std::string>& values,
                  std::string_view extra_name = {}, std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return;
  out.push_back('{');
  bool first = true;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (!first) out.push_back(',');
    first = false;
    out.append(names[i]).append("=\"");
    AppendLabelValue(out, values[i]);
    out.push_back('"');
  }
  if (!extra_name.empty()) {
    if (!first) out.push_back(',');
    out.append(extra_name).append("=\"").append(extra_value).push_back('"');
  }
  out.push_back('}');
}

void AppendHeader(std::string& out, const std::string& name, const std::string& help, std::string_view type) {
  out.append("# HELP ").append(name).push_back(' ');
  out.append(help).push_back('\n');
  out.append("# TYPE ").append(name).push_back(' ');
  out.append(type).push_back('\n');
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
  buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size());
  for (size_t i = 0; i < bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  // Buckets hold non-cumulative counts; rendering accumulates them.
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  if (it != bounds_.end()) buckets_[static_cast<size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

uint64_t Histogram::CumulativeCount(size_t i) const {
  uint64_t total = 0;
  for (size_t k = 0; k <= i && k < bounds_.size(); ++k) total += buckets_[k].load(std::memory_order_relaxed);
  return total;
}

std::vector<double> LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

Family<Counter>& Registry::AddCounter(std::string name, std::string help, std::vector<std::string> labels) {
  std::lock_guard lock(mu_);
  counters_.push_back(std::make_unique<Family<Counter>>(std::move(name), std::move(help), std::move(labels),
                                                        [] { return std::make_unique<Counter>(); }));
  return *counters_.back();
}

Family<Gauge>& Registry::AddGauge(std::string name, std::string help, std::vector<std::string> labels) {
  std::lock_guard lock(mu_);
  gauges_.push_back(std::make_unique<Family<Gauge>>(std::move(name), std::move(help), std::move(labels),
                                                    [] { return std::make_unique<Gauge>(); }));
  return *gauges_.back();
}

Family<Histogram>& Registry::AddHistogram(std::string name, std::string help, std::vector<std::string> labels,
                                          std::vector<double> bounds) {
  std::lock_guard lock(mu_);
  histograms_.push_back(std::make_unique<Family<Histogram>>(
      std::move(name), std::move(help), std::move(labels),
      [bounds = std::move(bounds)] { return std::make_unique<Histogram>(bounds); }));
  return *histograms_.back();
}

void Registry::AddCollector(std::function<void(std::string&)> collector) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string Registry::Render() const {
  std::lock_guard lock(mu_);
  std::string out;
  out.reserve(8192);
  for (const auto& f : counters_) {
    AppendHeader(out, f->name(), f->help(), "counter");
    f->ForEach([&](const std::vector<std::string>& labels, const Counter& c) {
      out.append(f->name());
      AppendLabels(out, f->label_names(), labels);
      out.push_back(' ');
      out.append(std::to_string(c.Value())).push_back('\n');
    });
  }
  for (const auto& f : gauges_) {
    AppendHeader(out, f->name(), f->help(), "gauge");
    f->ForEach([&](const std::vector<std::string>& labels, const Gauge& g) {
      out.append(f->name());
      AppendLabels(out, f->label_names(), labels);
      out.push_back(' ');
      AppendNumber(out, g.Value());
      out.push_back('\n');
    });
  }
  for (const auto& f : histograms_) {
    AppendHeader(out, f->name(), f->help(), "histogram");
    f->ForEach([&](const std::vector<std::string>& labels, const Histogram& h) {
      // Read count first: buckets may only grow past it, and +Inf must equal _count.
      uint64_t count = h.Count();
      uint64_t cumulative = 0;
      for (size_t i = 0; i < h.bounds().size(); ++i) {
        cumulative = std::min(count, h.CumulativeCount(i));
        std::string le;
        AppendNumber(le, h.bounds()[i]);
        out.append(f->name()).append("_bucket");
        AppendLabels(out, f->label_names(), labels, "le", le);
        out.push_back(' ');
        out.append(std::to_string(cumulative)).push_back('\n');
      }
      out.append(f->name()).append("_bucket");
      AppendLabels(out, f->label_names(), labels, "le", "+Inf");
      out.push_back(' ');
      out.append(std::to_string(count)).push_back('\n');
      out.append(f->name()).append("_sum");
      AppendLabels(out, f->label_names(), labels);
      out.push_back(' ');
      AppendNumber(out, h.Sum());
      out.push_back('\n');
      out.append(f->name()).append("_count");
      AppendLabels(out, f->label_names(), labels);
      out.push_back(' ');
      out.append(std::to_string(count)).push_back('\n');
    });
  }
  for (const auto& c : collectors_) c(out);
  return out;
}

}  // namespace smart::metrics
