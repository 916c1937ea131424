"""OpenAI-shaped API errors: `{"error": {"message", "type", "param", "code"}}` with string codes.

Every refusal the server makes is one of these, raised anywhere in the request path and turned
into a JSON response (or, once a stream has started, into an SSE error event) in one place.
"""

from __future__ import annotations

from typing import Any

# HTTP status -> OpenAI error type (notes/serving.md §2.5).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error", 502: "upstream_error", 503: "overloaded_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def overloaded(retry_after_s: int, what: str) -> ApiError:
    return ApiError(503, f"the server is busy ({what}); retry after {retry_after_s} s",
                    code="server_overloaded", headers={"Retry-After": str(retry_after_s)})
