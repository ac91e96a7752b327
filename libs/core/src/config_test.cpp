#include "smart/core/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace smart::config {
namespace {

std::vector<Key> Schema() {
  return {
      {.name = "http.port", .type = Type::kInt, .default_value = "8080", .min = 0, .max = 65535},
      {.name = "http.host", .type = Type::kString, .default_value = "127.0.0.1"},
      {.name = "http.cors_origins", .type = Type::kStringList, .default_value = ""},
      {.name = "log.level",
       .type = Type::kString,
       .default_value = "info",
       .choices = {"debug", "info", "warn", "error"}},
      {.name = "log.access", .type = Type::kBool, .default_value = "true"},
      {.name = "database.url", .type = Type::kString, .default_value = "", .redact = Redact::kUrlPassword},
      {.name = "auth.secret", .type = Type::kString, .default_value = "", .redact = Redact::kAll},
  };
}

class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    char name[] = "/tmp/smart-config-XXXXXX";
    int fd = mkstemp(name);
    path_ = name;
    std::ofstream(path_) << text;
    close(fd);
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(Config, DefaultsApply) {
  Config c(Schema());
  EXPECT_EQ(c.Int("http.port"), 8080);
  EXPECT_EQ(c.String("http.host"), "127.0.0.1");
  EXPECT_TRUE(c.StringList("http.cors_origins").empty());
  EXPECT_TRUE(c.Bool("log.access"));
  EXPECT_EQ(c.Source("http.port"), "default");
}

TEST(Config, FileThenEnvThenFlag) {
  Config c(Schema());
  TempFile f(
      "[http]\nport = 9000\ncors_origins = [\"https://a.example\", \"https://b.example\"]\n[log]\nlevel = \"debug\"\n");
  ASSERT_TRUE(c.LoadFile(f.path()).ok());
  EXPECT_EQ(c.Int("http.port"), 9000);
  EXPECT_EQ(c.StringList("http.cors_origins").size(), 2u);
  EXPECT_EQ(c.String("log.level"), "debug");

  char v1[] = "SMART_HTTP_PORT=9100";
  char v2[] = "SMART_LOG_ACCESS=false";
  char v3[] = "SMART_UNRELATED=1";
  char v4[] = "SMART_HTTP_PORTX=1";
  char* env[] = {v1, v2, v3, v4, nullptr};
  ASSERT_TRUE(c.LoadEnv(env).ok());
  EXPECT_EQ(c.Int("http.port"), 9100);
  EXPECT_EQ(c.Source("http.port"), "SMART_HTTP_PORT");
  EXPECT_FALSE(c.Bool("log.access"));

  ASSERT_TRUE(c.Set("http.port", "9200", "--port").ok());
  EXPECT_EQ(c.Int("http.port"), 9200);
  EXPECT_EQ(c.Source("http.port"), "--port");
}

TEST(Config, ErrorsNameTheKey) {
  Config c(Schema());
  auto r = c.Set("http.port", "abc", "--port");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("http.port"), std::string::npos);
  EXPECT_NE(r.error().message.find("--port"), std::string::npos);

  r = c.Set("http.port", "70000", "--port");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("between 0 and 65535"), std::string::npos);
  EXPECT_EQ(c.Int("http.port"), 8080) << "a rejected value leaves the old one";

  r = c.Set("log.level", "verbose", "flag");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("one of"), std::string::npos);

  char bad[] = "SMART_LOG_ACCESS=maybe";
  char* env[] = {bad, nullptr};
  r = c.LoadEnv(env);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("SMART_LOG_ACCESS"), std::string::npos);
}

TEST(Config, FileErrors) {
  Config c(Schema());
  TempFile unknown("[http]\nprot = 1\n");
  auto r = c.LoadFile(unknown.path());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("http.prot"), std::string::npos);

  TempFile wrong_type("[http]\nport = \"eighty\"\n");
  r = c.LoadFile(wrong_type.path());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("http.port"), std::string::npos);

  TempFile syntax("[http\nport = 1\n");
  r = c.LoadFile(syntax.path());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("line"), std::string::npos);

  r = c.LoadFile("/nonexistent/smart.toml");
  ASSERT_FALSE(r.ok());
}

TEST(Config, PrintRedactsSecrets) {
  Config c(Schema());
  ASSERT_TRUE(c.Set("database.url", "postgresql://smart:hunter2@db:5432/smart", "flag").ok());
  ASSERT_TRUE(c.Set("auth.secret", "topsecret", "flag").ok());
  std::string out = c.Print();
  EXPECT_EQ(out.find("hunter2"), std::string::npos);
  EXPECT_EQ(out.find("topsecret"), std::string::npos);
  EXPECT_NE(out.find("postgresql://smart:***@db:5432/smart"), std::string::npos);
  EXPECT_NE(out.find("[http]"), std::string::npos);
  EXPECT_NE(out.find("port = 8080"), std::string::npos);
}

TEST(Config, EnvName) { EXPECT_EQ(Config::EnvName("http.max_body_bytes"), "SMART_HTTP_MAX_BODY_BYTES"); }

}  // namespace
}  // namespace smart::config
