#include "smart/http/message.hpp"

#include <gtest/gtest.h>

namespace smart::http {
namespace {

TEST(Problem, HasEveryRfc9457Member) {
  Request req;
  req.request_id = "req-1";
  Response res = MakeProblem(req, {.status = 422,
                                   .code = "validation_failed",
                                   .detail = "Bad \"name\".",
                                   .errors = {{"name", "must not be empty"}}});
  EXPECT_EQ(res.status, 422);
  EXPECT_EQ(res.headers.Get("content-type"), "application/problem+json");
  EXPECT_EQ(res.body,
            "{\"type\":\"urn:smart:problem:validation_failed\",\"title\":\"Unprocessable Content\",\"status\":422,"
            "\"detail\":\"Bad \\\"name\\\".\",\"code\":\"validation_failed\",\"request_id\":\"req-1\","
            "\"errors\":[{\"field\":\"name\",\"message\":\"must not be empty\"}]}");
}

TEST(Headers, CaseInsensitive) {
  Headers h;
  h.Add("Content-Type", "a");
  EXPECT_EQ(h.Get("content-type"), "a");
  h.Set("CONTENT-TYPE", "b");
  EXPECT_EQ(h.fields().size(), 1u);
  EXPECT_EQ(h.Get("Content-Type"), "b");
  h.Remove("content-type");
  EXPECT_FALSE(h.Get("Content-Type"));
}

TEST(Request, QueryParameters) {
  Request req;
  req.query = "limit=5&name=a+b%21&flag&limit=9";
  EXPECT_EQ(req.Query("limit"), "5");
  EXPECT_EQ(req.Query("name"), "a b!");
  EXPECT_EQ(req.Query("flag"), "");
  EXPECT_FALSE(req.Query("missing"));
}

TEST(PercentDecode, RejectsBadEscapes) {
  EXPECT_EQ(PercentDecode("a%2Fb"), "a/b");
  EXPECT_FALSE(PercentDecode("%"));
  EXPECT_FALSE(PercentDecode("%2"));
  EXPECT_FALSE(PercentDecode("%g0"));
  EXPECT_EQ(PercentDecode("a+b"), "a+b");
  EXPECT_EQ(PercentDecode("a+b", true), "a b");
}

}  // namespace
}  // namespace smart::http
