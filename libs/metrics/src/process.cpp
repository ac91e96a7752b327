#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "smart/metrics/metrics.hpp"

namespace smart::metrics {
namespace {

struct ProcStat {
  double cpu_seconds = 0;
  double start_time_seconds = 0;
  double resident_bytes = 0;
  double virtual_bytes = 0;
};

double BootTimeSeconds() {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "btime") {
      double v = 0;
      in >> v;
      return v;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

ProcStat ReadProcStat() {
  ProcStat s;
  std::ifstream in("/proc/self/stat");
  std::string line;
  std::getline(in, line);
  // The command name (field 2) may hold spaces: fields are counted after its ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos) return s;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  for (int i = 3; rest >> field; ++i) {
    if (i == 14 || i == 15) s.cpu_seconds += std::stod(field) / ticks;
    if (i == 22) s.start_time_seconds = BootTimeSeconds() + std::stod(field) / ticks;
    if (i == 23) s.virtual_bytes = std::stod(field);
    if (i == 24) {
      s.resident_bytes = std::stod(field) * page;
      break;
    }
  }
  return s;
}

int CountOpenFds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++n;
    closedir(d);
    n -= 3;  // ".", ".." and the directory's own descriptor
  }
  return n;
}

void Sample(std::string& out, const char* name, const char* help, const char* type, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  out.append("# HELP ").append(name).append(" ").append(help).append("\n# TYPE ").append(name).append(" ");
  out.append(type).append("\n").append(name).append(" ").append(buf).append("\n");
}

}  // namespace

void AddProcessCollector(Registry& registry, std::string version, std::string commit) {
  registry.AddCollector([version = std::move(version), commit = std::move(commit)](std::string& out) {
    ProcStat s = ReadProcStat();
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    Sample(out, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter",
           s.cpu_seconds);
    Sample(out, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", s.resident_bytes);
    Sample(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", s.virtual_bytes);
    Sample(out, "process_open_fds", "Number of open file descriptors.", "gauge", CountOpenFds());
    Sample(out, "process_max_fds", "Maximum number of open file descriptors.", "gauge",
           static_cast<double>(lim.rlim_cur));
    Sample(out, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge",
           s.start_time_seconds);
    out.append("# HELP smart_build_info Version and commit of this build.\n# TYPE smart_build_info gauge\n");
    out.append("smart_build_info{version=\"").append(version).append("\",commit=\"").append(commit).append("\"} 1\n");
  });
}

}  // namespace smart::metrics
