"""The REST API of DESIGN.md section 5, mounted at /api/v1/ (django-ninja: typed function
views and the OpenAPI document at /api/v1/openapi.json). The apps add their routers here.

Every error leaves as {"error": "<code>", "detail": "<human sentence>"} with a 4xx status.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, connection
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.datastructures import MultiValueDict
from ninja import NinjaAPI, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.renderers import JSONRenderer
from ninja.responses import NinjaJSONEncoder

from common.refusals import Refused
from console import liveness
from console.auth import API_AUTH
from loops.api import router as loops_router
from oversight.api import router as oversight_router
from oversight.models import Halt
from realms.api import router as realms_router


class _Encoder(NinjaJSONEncoder):
    def default(self, o: Any) -> Any:
        # Django's encoder cuts times to milliseconds; the contract promises microseconds, so
        # that an outside check can order a run's start against a halt's commit time.
        if isinstance(o, datetime):
            return o.isoformat(timespec="microseconds")
        return super().default(o)


class _Renderer(JSONRenderer):
    encoder_class = _Encoder


class BodyNotAnObject(ValueError):
    """A JSON body that is not an object; the message names what it is instead."""


_JSON_KINDS = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}


class _Parser(Parser):
    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        """Every body of this API is a JSON object. ninja's Schema reads its fields as
        attributes of whatever it is given (it validates ORM objects that way), so [null, null]
        or 5 passed for a body whose fields all have defaults (a cancel's, an acknowledgement's)
        and the operation went ahead (H7, found by the fuzz test)."""
        data = json.loads(request.body)
        if not isinstance(data, dict):
            kind = _JSON_KINDS.get(type(data), "a number")
            raise BodyNotAnObject(f"body: the request body must be a JSON object, not {kind}.")
        return data

    def parse_querydict(
        self, data: MultiValueDict, list_fields: list[str], request: HttpRequest
    ) -> dict[str, Any]:
        """A parameter of one value given twice (?state=running&state=paused) was read as its
        last value: a client asking for two got one, without a word (H7, found by the fuzz
        test). No parameter of this API takes several values; list_fields would."""
        where = "query" if data is request.GET else "form"
        repeated = {key: len(values) for key, values in data.lists() if len(values) > 1}
        if problems := [key for key in repeated if key not in list_fields]:
            raise ValidationError(
                [{"loc": (where, key), "msg": f"given {repeated[key]} times"} for key in problems]
            )
        return super().parse_querydict(data, list_fields, request)


class _API(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any) -> Any:
        """Document the errors every operation can answer, so that a client (and the fuzz test,
        tests/security/test_fuzz.py) finds each status it may hear in the document: 400 for a
        bad parameter or body, 401 and 403 from the operation's auth, 413 for an oversize
        body. They come from the exception handlers below, not from the operations."""
        schema = super().get_openapi_schema(**kwargs)
        _state_the_request_rules(schema)
        schemes = schema["components"].get("securitySchemes", {})
        if "Needs" in schemes:  # ninja names a scheme after its class (console.auth.Needs)
            schemes["bearer"] = schemes.pop("Needs")
        error = {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        }
        for path in schema["paths"].values():
            for operation in path.values():
                responses = operation["responses"]
                for requirement in operation.get("security", []):
                    if "Needs" in requirement:
                        requirement["bearer"] = requirement.pop("Needs")
                statuses = [400]  # ninja keys responses by int
                if operation.get("security"):
                    statuses += [401, 403]
                if "requestBody" in operation:
                    statuses += [413]
                for status in statuses:
                    responses.setdefault(status, {"description": _DESCRIPTIONS[status], **error})
        return schema


def _state_the_request_rules(schema: dict[str, Any]) -> None:
    """What the server refuses before any operation, said in the document, so that a client
    (and a fuzzer) can tell a valid request from one it will refuse (tests/security/test_fuzz.py).

    1. An optional body is left out, not sent as null: ninja documents `X | None` as anyOf X
       or null, but _Parser refuses every body that is not a JSON object.
    2. No string, key or free-form value of a request holds a NUL (U+0000): RefuseNulMiddleware
       refuses one anywhere (PostgreSQL cannot store it), so every string of a parameter or
       body gets a pattern without it, and every free-form value or extra field is NulFree.
    """
    components = schema["components"].setdefault("schemas", {})
    bodies: list[dict[str, Any]] = []
    for path in schema["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                _refuse_nul(parameter["schema"])
            body = operation.get("requestBody", {})
            for media in body.get("content", {}).values():
                options = media["schema"].get("anyOf", [])
                if not body.get("required") and len(options) == 2 and _NULL in options:
                    media["schema"] = next(option for option in options if option != _NULL)
                bodies.append(media["schema"])
    names: set[str] = set()
    while bodies:  # the components the bodies use, and the ones those use in turn
        found = bodies.pop()
        if isinstance(found, dict):
            ref = found.get("$ref", "")
            if ref.startswith(_COMPONENTS) and ref[len(_COMPONENTS) :] not in names:
                names.add(ref[len(_COMPONENTS) :])
                bodies.append(components[ref[len(_COMPONENTS) :]])
            bodies.extend(found.values())
        elif isinstance(found, list):
            bodies.extend(found)
    for name in names:
        _refuse_nul(components[name])
    components["NulFree"] = NUL_FREE_VALUE


_COMPONENTS = "#/components/schemas/"
_NULL = {"type": "null"}
# A string without U+0000, spelled with an escape that ECMA 262, Python and Rust regexes read alike.
NUL_FREE = "^[^\\u0000]*$"
_NUL_FREE_REF = {"$ref": _COMPONENTS + "NulFree"}
NUL_FREE_VALUE = {
    "description": "Any JSON value with no NUL character (U+0000) in a string or a key: the "
    "server refuses a NUL anywhere in a request (400).",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": NUL_FREE},
        {"type": "array", "items": _NUL_FREE_REF},
        {
            "type": "object",
            "propertyNames": {"pattern": NUL_FREE},
            "additionalProperties": _NUL_FREE_REF,
        },
    ],
}
# Keywords that describe a value without constraining it: a schema of only these is any value.
_ANNOTATIONS = {"title", "description", "default", "examples"}


def _refuse_nul(schema: dict[str, Any]) -> None:
    """In place: no string of the schema, no key of its objects, and none of its free-form
    values (pydantic's Any, dict[str, Any], or fields the schema does not name, which ninja
    ignores) can hold a NUL. Conditions (if/then, not) only narrow what this already covers."""
    for option in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        _refuse_nul(option)
    kind = schema.get("type")
    if kind == "string":
        if "pattern" not in schema:
            schema["pattern"] = NUL_FREE
        elif schema["pattern"] != NUL_FREE and {"pattern": NUL_FREE} not in schema.get("allOf", []):
            schema.setdefault("allOf", []).append({"pattern": NUL_FREE})  # one pattern a schema
    elif kind == "object":
        for field in schema.get("properties", {}).values():
            _refuse_nul(field)
        schema.setdefault("propertyNames", {"pattern": NUL_FREE})
        extra = schema.get("additionalProperties", True)
        if isinstance(extra, dict) and set(extra) - _ANNOTATIONS:
            _refuse_nul(extra)
        elif extra is not False:
            schema["additionalProperties"] = _NUL_FREE_REF
    elif kind == "array":
        if isinstance(schema.get("items"), dict) and set(schema["items"]) - _ANNOTATIONS:
            _refuse_nul(schema["items"])
        else:
            schema["items"] = _NUL_FREE_REF
    elif not set(schema) - _ANNOTATIONS:
        schema.update(_NUL_FREE_REF)


_DESCRIPTIONS = {
    400: "Bad Request: a parameter or the body is wrong (a body that is not a JSON object, a NUL "
    "character anywhere, a value the schema does not allow); the detail names it",
    401: "Unauthorized: no session; an unknown or revoked token; an agent's bad signature",
    403: "Forbidden: the caller lacks the role, or the CSRF token is missing",
    413: "Content Too Large: the body is over the stated limit (MAX_REQUEST_BYTES)",
}

api = _API(
    title="Loop Stack Console",
    version="1",
    urls_namespace="api",
    openapi_url="/openapi.json",
    docs_url=None,  # Swagger UI would load from a CDN; the console must work air-gapped
    auth=API_AUTH,  # every call needs a user or a token, unless it says auth=None
    renderer=_Renderer(),
    parser=_Parser(),
)
api.add_router("/", loops_router)
api.add_router("/", oversight_router)
api.add_router("/", realms_router)


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


_CODES = {400: "bad_request", 403: "forbidden", 404: "not_found", 409: "conflict", 423: "halted"}
# Errors ninja raises itself, with a code and a sentence of the contract's kind.
_NINJA_ERRORS = {
    "Cannot parse request body": ("invalid_json", "The request body is not valid JSON."),
    "CSRF check Failed": ("csrf_failed", "The CSRF token is missing or wrong."),
}


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, BodyNotAnObject):  # ninja wraps whatever the parser raises
        return error_response(request, 400, "invalid_request", str(exc.__cause__))
    message = str(exc)
    code, detail = _NINJA_ERRORS.get(message.split(" (")[0], (None, message))
    # An HttpError of ours may carry its own code (console.auth.SignatureRefused).
    code = code or getattr(exc, "code", None) or _CODES.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, code, detail)


@api.exception_handler(RequestDataTooBig)
def _too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_response(
        request, 413, "too_large", f"The request body is over the limit of {limit:,} bytes."
    )


@api.exception_handler(Refused)
def _refused(request: HttpRequest, exc: Refused) -> HttpResponse:
    """Every refusal of a service (a wrong state included: common.states), in one place."""
    return error_response(request, exc.status, exc.code, exc.detail)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", str(exc) or "No such object.")


class Health(Schema):
    database: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable"]
    workers: int
    halted: bool  # a global halt is active
    halts: int  # active halts of any scope


@api.get("/health", auth=None, response={200: Health, 503: Health}, tags=["health"])
def health(request: HttpRequest) -> Status:
    """Real checks of the database, Redis and the live Celery workers; 503 if one is down."""
    database = _database_status()
    redis_status: Literal["ok", "unavailable"] = "ok"
    try:
        workers = liveness.worker_count()
    except redis.RedisError:
        workers, redis_status = 0, "unavailable"
    halted, halts = _halts() if database == "ok" else (False, 0)
    status = Health(
        database=database, redis=redis_status, workers=workers, halted=halted, halts=halts
    )
    return Status(200 if database == redis_status == "ok" else 503, status)


def _halts() -> tuple[bool, int]:
    active = list(Halt.objects.filter(lifted_at__isnull=True).values_list("kind", flat=True))
    return Halt.Kind.GLOBAL in active, len(active)


def _database_status() -> Literal["ok", "unavailable"]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return "unavailable"
    return "ok"
