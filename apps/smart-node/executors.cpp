#include "executors.hpp"

#include <boost/json.hpp>
#include <thread>

#include "smart/core/crypto.hpp"
#include "smart/http/client.hpp"

namespace smart::node {
namespace json = boost::json;
namespace {

json::object Params(const Job& job) {
  boost::system::error_code ec;
  auto v = json::parse(job.parameters, ec);
  return !ec && v.is_object() ? v.as_object() : json::object{};
}

// The message of an OpenAI-style error body, or the body itself.
std::string ErrorMessage(int status, const std::string& body) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  std::string msg = body.substr(0, 300);
  if (!ec && v.is_object()) {
    if (const auto* e = v.as_object().if_contains("error")) {
      if (e->is_object() && e->as_object().contains("message") && e->as_object().at("message").is_string()) {
        msg = std::string(e->as_object().at("message").as_string());
      } else if (e->is_string()) {
        msg = std::string(e->as_string());
      }
    }
  }
  return "the model endpoint answered " + std::to_string(status) + ": " + msg;
}

}  // namespace

const std::vector<std::string>& Executors::Types() {
  static const std::vector<std::string> types = {"echo",      "sha256",         "text_generation",
                                                 "inference", "classification", "embedding"};
  return types;
}

Result<std::string> Executors::Run(const Job& job, const ProgressFn& progress, const std::atomic<bool>& cancel) const {
  if (job.type == "echo") {
    auto params = Params(job);
    int64_t delay = 0;
    if (const auto* d = params.if_contains("delay_ms"); d && d->is_int64())
      delay = std::clamp<int64_t>(d->as_int64(), 0, 60'000);
    for (int64_t waited = 0; waited < delay; waited += 10) {
      if (cancel.load()) return Error::Unavailable("cancelled", "the job was stopped");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (waited % 1000 == 0 && waited > 0) progress(static_cast<int>(waited * 100 / delay), "echoing");
    }
    return job.input;
  }
  if (job.type == "sha256") return crypto::Sha256Hex(job.input);
  if (job.type == "embedding") return Embed(job);
  if (job.type == "text_generation" || job.type == "inference" || job.type == "classification") {
    return Chat(job, progress, cancel);
  }
  return Error::Invalid("unsupported_type", "this node cannot run tasks of type " + job.type);
}

Result<std::string> Executors::Chat(const Job& job, const ProgressFn& progress, const std::atomic<bool>& cancel) const {
  if (openai_.base_url.empty()) {
    return Error::Unavailable("no_endpoint",
                              "this node has no OpenAI-compatible endpoint configured "
                              "(openai.base_url), so it cannot run " +
                                  job.type + " tasks");
  }
  auto params = Params(job);
  json::array messages;
  boost::system::error_code ec;
  if (job.input_is_json) {
    auto in = json::parse(job.input, ec);
    if (!ec && in.is_object() && in.as_object().contains("messages") && in.as_object().at("messages").is_array()) {
      messages = in.as_object().at("messages").as_array();
    } else {
      messages.push_back(json::object{{"role", "user"}, {"content", job.input}});
    }
  } else {
    messages.push_back(json::object{{"role", "user"}, {"content", job.input}});
  }
  if (job.type == "classification") {
    const auto* labels = params.if_contains("labels");
    if (!labels || !labels->is_array() || labels->as_array().empty()) {
      return Error::Invalid("invalid_parameters", "classification needs parameters.labels, a list of labels");
    }
    std::string list;
    for (const auto& l : labels->as_array()) {
      if (!l.is_string()) return Error::Invalid("invalid_parameters", "parameters.labels must be strings");
      list += (list.empty() ? "" : ", ") + std::string(l.as_string());
    }
    messages.insert(messages.begin(),
                    json::object{{"role", "system"},
                                 {"content", "Classify the user's text into exactly one of these labels: " + list +
                                                 ". Answer with the label only."}});
  }
  bool stream = params.contains("stream") && params.at("stream").is_bool() && params.at("stream").as_bool();
  json::object body{{"model", params.contains("model") && params.at("model").is_string() ? params.at("model")
                                                                                         : json::value(openai_.model)},
                    {"messages", std::move(messages)},
                    {"stream", stream}};
  for (const char* k : {"max_tokens", "temperature", "top_p", "stop", "seed"}) {
    if (params.contains(k)) body[k] = params.at(k);
  }
  http::ClientRequest req{.method = "POST",
                          .url = openai_.base_url + "/chat/completions",
                          .headers = {{"Content-Type", "application/json"}},
                          .body = json::serialize(body),
                          .timeout = openai_.timeout};
  if (!openai_.api_key.empty()) req.headers.emplace_back("Authorization", "Bearer " + openai_.api_key);

  if (!stream) {
    auto res = http::Send(req);
    if (!res) return res.take_error();
    if (res->status >= 400) return Error::Unavailable("model_error", ErrorMessage(res->status, res->body));
    auto v = json::parse(res->body, ec);
    const json::value* content = nullptr;
    if (!ec && v.is_object()) {
      if (const auto* choices = v.as_object().if_contains("choices");
          choices && choices->is_array() && !choices->as_array().empty()) {
        const auto& first = choices->as_array()[0];
        if (first.is_object()) {
          if (const auto* msg = first.as_object().if_contains("message"); msg && msg->is_object()) {
            content = msg->as_object().if_contains("content");
          }
        }
      }
    }
    if (!content || !content->is_string()) {
      return Error::Unavailable("model_error", "the model endpoint's answer has no choices[0].message.content");
    }
    progress(100, "generated");
    return std::string(content->as_string());
  }

  // Server-sent events: "data: {json}\n\n" ... "data: [DONE]\n\n".
  std::string buffer, all, output;
  int chunks = 0;
  bool done = false;
  auto on_data = [&](std::string_view data) {
    if (cancel.load()) return false;
    all.append(data);
    buffer.append(data);
    size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      size_t pos = 0;
      while (pos < event.size()) {
        size_t nl = event.find('\n', pos);
        std::string line = event.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? event.size() : nl + 1;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.rfind("data:", 0) != 0) continue;
        std::string payload = line.substr(line.size() > 5 && line[5] == ' ' ? 6 : 5);
        if (payload == "[DONE]") {
          done = true;
          continue;
        }
        boost::system::error_code pec;
        auto v = json::parse(payload, pec);
        if (pec || !v.is_object()) continue;  // an error body is handled below with the status
        const auto* choices = v.as_object().if_contains("choices");
        if (!choices || !choices->is_array() || choices->as_array().empty()) continue;
        const auto& c = choices->as_array()[0];
        if (!c.is_object()) continue;
        if (const auto* delta = c.as_object().if_contains("delta"); delta && delta->is_object()) {
          if (const auto* t = delta->as_object().if_contains("content"); t && t->is_string()) {
            output += std::string(t->as_string());
            ++chunks;
            progress(std::min(99, chunks), "streamed " + std::to_string(chunks) + " chunks");
          }
        }
      }
    }
    return true;
  };
  auto res = http::Send(req, on_data);
  if (cancel.load()) return Error::Unavailable("cancelled", "the job was stopped");
  if (!res) return res.take_error();
  if (res->status >= 400) return Error::Unavailable("model_error", ErrorMessage(res->status, all));
  if (!done) return Error::Unavailable("model_error", "the model endpoint's stream ended without [DONE]");
  return output;
}

Result<std::string> Executors::Embed(const Job& job) const {
  if (openai_.base_url.empty()) {
    return Error::Unavailable("no_endpoint",
                              "this node has no OpenAI-compatible endpoint configured "
                              "(openai.base_url), so it cannot run embedding tasks");
  }
  auto params = Params(job);
  json::value input(job.input);
  boost::system::error_code ec;
  if (job.input_is_json) {
    auto v = json::parse(job.input, ec);
    if (!ec) input = v;
  }
  json::object body{{"model", params.contains("model") && params.at("model").is_string() ? params.at("model")
                                                                                         : json::value(openai_.model)},
                    {"input", input}};
  http::ClientRequest req{.method = "POST",
                          .url = openai_.base_url + "/embeddings",
                          .headers = {{"Content-Type", "application/json"}},
                          .body = json::serialize(body),
                          .timeout = openai_.timeout};
  if (!openai_.api_key.empty()) req.headers.emplace_back("Authorization", "Bearer " + openai_.api_key);
  auto res = http::Send(req);
  if (!res) return res.take_error();
  if (res->status >= 400) return Error::Unavailable("model_error", ErrorMessage(res->status, res->body));
  auto v = json::parse(res->body, ec);
  if (ec || !v.is_object() || !v.as_object().contains("data") || !v.as_object().at("data").is_array()) {
    return Error::Unavailable("model_error", "the model endpoint's answer has no data[]");
  }
  json::array vectors;
  for (const auto& item : v.as_object().at("data").as_array()) {
    if (!item.is_object() || !item.as_object().contains("embedding")) {
      return Error::Unavailable("model_error", "an item of data[] has no embedding");
    }
    vectors.push_back(item.as_object().at("embedding"));
  }
  if (!input.is_array() && vectors.size() == 1) return json::serialize(vectors[0]);
  return json::serialize(vectors);
}

}  // namespace smart::node
