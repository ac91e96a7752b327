// Starts a child process with its stdout captured, for tests against the real binaries.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace smart::testing {

class Process {
 public:
  // argv[0] is the program path; `env` entries ("K=V") are added to the inherited environment.
  Process(std::vector<std::string> argv, std::vector<std::string> env = {});
  ~Process();  // SIGKILLs the child if it still runs.
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Reads stdout until a line contains `needle`; returns that line.
  std::optional<std::string> WaitForLine(const std::string& needle,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Everything read from stdout so far.
  const std::string& output() const { return out_; }
  void Signal(int sig);
  // Waits for exit; returns the exit code, 128+signal, or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Reads whatever stdout remains (after exit).
  void Drain();

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string out_;
  size_t scanned_ = 0;
  std::optional<int> status_;
};

// A fresh directory under /tmp, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs a command, returning its exit code and combined stdout+stderr.
std::pair<int, std::string> RunCommand(std::vector<std::string> argv, std::vector<std::string> env = {});

}  // namespace smart::testing
