// What a smart-node does with a task, by type:
//   echo, sha256            built in (tests and benchmarks); echo honours
//                           parameters.delay_ms (at most 60 s)
//   text_generation, inference, classification, embedding
//                           through an OpenAI-compatible endpoint (llama.cpp
//                           server, vLLM, Ollama, a hosted API): chat
//                           completions (SSE streaming when parameters.stream
//                           is true) or embeddings
// An executor's error is the task's failure, reported as such.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "smart/core/result.hpp"

namespace smart::node {

struct Job {
  std::string id;
  std::string type;
  std::string input;  // text, or JSON text when input_is_json
  bool input_is_json = false;
  std::string parameters = "{}";
};

struct OpenAiConfig {
  std::string base_url;  // e.g. http://127.0.0.1:8081/v1; empty: not configured
  std::string model;
  std::string api_key;  // sent as a Bearer token when set
  std::chrono::milliseconds timeout{120'000};
};

// Called with a percent (0-100) and a short message while a job runs.
using ProgressFn = std::function<void(int percent, const std::string& message)>;

class Executors {
 public:
  explicit Executors(OpenAiConfig openai) : openai_(std::move(openai)) {}
  // The task types this node can run.
  static const std::vector<std::string>& Types();
  // The output, or why the task failed. `cancel` stops a long job early.
  Result<std::string> Run(const Job& job, const ProgressFn& progress, const std::atomic<bool>& cancel) const;

 private:
  Result<std::string> Chat(const Job& job, const ProgressFn& progress, const std::atomic<bool>& cancel) const;
  Result<std::string> Embed(const Job& job) const;
  OpenAiConfig openai_;
};

}  // namespace smart::node
