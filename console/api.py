"""The REST API of DESIGN.md section 5, mounted at /api/v1/ (django-ninja: typed function
views and the OpenAPI document at /api/v1/openapi.json). The apps add their routers here.

Every error leaves as {"error": "<code>", "detail": "<human sentence>"} with a 4xx status.
"""

from __future__ import annotations

from typing import Literal

import redis
from django.db import DatabaseError, connection
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError

from console import liveness

api = NinjaAPI(
    title="Loop Stack Console",
    version="1",
    urls_namespace="api",
    openapi_url="/openapi.json",
    docs_url=None,  # Swagger UI would load from a CDN; the console must work air-gapped
)


def error_response(request: HttpRequest, status: int, code: str, detail: str) -> HttpResponse:
    return api.create_response(request, {"error": code, "detail": detail}, status=status)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors
    )
    return error_response(request, 400, "invalid_request", problems or "The request is invalid.")


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(request, 401, "unauthenticated", "Sign in or send a bearer token.")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return error_response(request, exc.status_code, "http_error", str(exc))


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", str(exc) or "No such object.")


class Health(Schema):
    database: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable"]
    workers: int
    halted: bool


@api.get("/health", auth=None, response={200: Health, 503: Health}, tags=["health"])
def health(request: HttpRequest) -> Status:
    """Real checks of the database, Redis and the live Celery workers; 503 if one is down."""
    database = _database_status()
    try:
        workers = liveness.worker_count()
        redis_status = "ok"
    except redis.RedisError:
        workers, redis_status = 0, "unavailable"
    # Halts arrive with the oversight app; until a halt can exist, none is active.
    status = Health(database=database, redis=redis_status, workers=workers, halted=False)
    return Status(200 if database == redis_status == "ok" else 503, status)


def _database_status() -> Literal["ok", "unavailable"]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return "unavailable"
    return "ok"
