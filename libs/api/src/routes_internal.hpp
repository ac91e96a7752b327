#pragma once

#include "smart/api/routes.hpp"
#include "smart/auth/service.hpp"

namespace smart::api {

void RegisterAuthRoutes(http::Router& router, const Deps& deps);

// The caller behind `Authorization: Bearer <token>`.
Result<auth::Principal> Authenticate(const Deps& deps, const http::Request& req);
// A 401 problem with the WWW-Authenticate challenge.
http::Response Unauthorized(const http::Request& req, const Error& e);

}  // namespace smart::api
