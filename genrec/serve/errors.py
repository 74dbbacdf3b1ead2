"""Refusals as JSON: every 4xx the server sends has the body ``{"error": code, "message": text, ...}``, and
the code is noted in the request scope so /metrics can count errors by kind."""
from __future__ import annotations

from starlette.responses import JSONResponse

ERROR_CODE_KEY = "genrec_error"  # where in scope["state"] the error code of the response is noted
ARRIVAL_KEY = "genrec_arrival"  # where in scope["state"] the request's arrival is noted (time.perf_counter)


class ApiError(Exception):
    """A request the server refuses: HTTP status, short machine-readable code, human message, extra fields."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def error_response(scope: dict, status: int, code: str, message: str, **extra: object) -> JSONResponse:
    """The JSON error response, with ``code`` noted in the scope for the metrics middleware."""
    scope.setdefault("state", {})[ERROR_CODE_KEY] = code
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def unavailable_response(scope: dict, code: str, message: str, retry_after_s: int) -> JSONResponse:
    """503 with Retry-After (header and body): the server cannot take the request now."""
    response = error_response(scope, 503, code, message, retry_after_s=retry_after_s)
    response.headers["Retry-After"] = str(retry_after_s)
    return response
