"""Who gets what (DESIGN.md H6): every route of the URL configuration, each method it serves,
asked by anonymous, an agent's token, a viewer, an operator and an admin.

The routes come from the URL configuration and the API's OpenAPI document, so a new route
without a rule here fails `test_every_route_has_a_rule`. A refusal must be exact (the login
redirect, 401, 403). An allowed request must get past authorisation and not fail: any answer
but 401, 403 or a 5xx (its body may still be refused, with a 4xx that names the problem).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from console.auth import token_create
from loops import services
from loops.declare import sync_declarations
from loops.models import Agent
from oversight.models import CircuitBreaker, Interrupt
from oversight.services import halts
from oversight.services.alerts import alert_raise
from tests.conftest import agent_bearer, drive, signed_in, with_role

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "agent", "viewer", "operator", "admin")
OK = "ok"  # past authorisation, no 5xx
LOGIN = 302  # a page's answer to someone not signed in: to the login form
EVERYONE = (OK,) * 5
PAGE = (LOGIN, LOGIN, OK, OK, OK)  # a page viewers may see (session only: a token is no one)
PAGE_OPERATE = (LOGIN, LOGIN, 403, OK, OK)
PAGE_ADMIN = (LOGIN, LOGIN, 403, 403, OK)
API_VIEW = (401, 403, OK, OK, OK)  # an agent's token holds no role
API_OPERATE = (401, 403, 403, OK, OK)
API_ADMIN = (401, 403, 403, 403, OK)
# Django's admin site is for staff (superusers); the console's roles are not staff.
ADMIN_SITE = (302, 302, 302, 302, 302)

# (method, route as the URL configuration spells it) → the answer for each of ROLES.
RULES: dict[tuple[str, str], tuple] = {
    ("GET", ""): PAGE,
    ("GET", "loops/domains/<slug:slug>/"): PAGE,
    ("POST", "loops/domains/<slug:slug>/pause"): PAGE_OPERATE,
    ("POST", "loops/domains/<slug:slug>/resume"): PAGE_OPERATE,
    ("GET", "loops/runs/<int:run_id>/"): PAGE,
    ("GET", "loops/runs/<int:run_id>/remote"): PAGE,  # a remote frame's view (404 for others)
    ("POST", "loops/runs/<int:run_id>/pause"): PAGE_OPERATE,
    ("POST", "loops/runs/<int:run_id>/resume"): PAGE_OPERATE,
    ("POST", "loops/runs/<int:run_id>/cancel"): PAGE_OPERATE,
    ("GET", "loops/agents/"): PAGE,
    ("GET", "oversight/inbox/"): PAGE,
    ("POST", "oversight/inbox/<int:pk>/decide"): PAGE_OPERATE,
    ("POST", "oversight/inbox/<int:pk>/claim"): PAGE_OPERATE,
    ("GET", "oversight/interrupts/<int:pk>/"): PAGE,  # one decision, readable (issue 17)
    ("GET", "oversight/breakers/"): PAGE,
    ("POST", "oversight/breakers/<int:breaker_id>/reset"): PAGE_OPERATE,
    ("POST", "oversight/breakers/<int:breaker_id>/force-open"): PAGE_OPERATE,
    ("GET", "oversight/halts/new"): PAGE_OPERATE,
    ("POST", "oversight/halts/"): PAGE_OPERATE,
    ("GET", "oversight/halts/<int:pk>/lift"): PAGE_ADMIN,
    ("POST", "oversight/halts/<int:pk>/lift"): PAGE_ADMIN,
    ("GET", "oversight/audit/"): PAGE,
    ("POST", "oversight/alerts/<int:pk>/acknowledge"): PAGE_OPERATE,
    ("GET", "accounts/login/"): EVERYONE,
    ("POST", "accounts/logout/"): (302,) * 5,
    ("GET", "accounts/password_change/"): (LOGIN, LOGIN, OK, OK, OK),
    ("GET", "accounts/password_change/done/"): (LOGIN, LOGIN, OK, OK, OK),
    ("GET", "accounts/password_reset/"): EVERYONE,
    ("GET", "accounts/password_reset/done/"): EVERYONE,
    ("GET", "accounts/reset/<uidb64>/<token>/"): EVERYONE,
    ("GET", "accounts/reset/done/"): EVERYONE,
    # The API (session or Authorization: Bearer; JSON).
    # The API's description is public: it names operations and shapes, no data.
    ("GET", "api/v1/openapi.json"): EVERYONE,
    ("GET", "api/v1/"): EVERYONE,
    ("GET", "api/v1/health"): EVERYONE,
    ("GET", "api/v1/domains"): API_VIEW,
    ("GET", "api/v1/blueprints"): API_VIEW,
    ("GET", "api/v1/runs"): API_VIEW,
    ("GET", "api/v1/runs/<id>"): API_VIEW,
    ("GET", "api/v1/runs/<id>/iterations"): API_VIEW,
    ("GET", "api/v1/runs/<id>/events"): API_VIEW,
    ("GET", "api/v1/agents"): API_VIEW,
    ("POST", "api/v1/domains/<slug>/runs"): API_OPERATE,
    ("POST", "api/v1/runs/<id>/pause"): API_OPERATE,
    ("POST", "api/v1/runs/<id>/resume"): API_OPERATE,
    ("POST", "api/v1/runs/<id>/cancel"): API_OPERATE,
    # The agent itself (its own token), or an operator for it.
    ("POST", "api/v1/agents/<id>/heartbeat"): (401, OK, 403, OK, OK),
    ("GET", "api/v1/interrupts"): API_VIEW,
    # An agent raises interrupts (for runs of its own domain); people decide them.
    ("POST", "api/v1/interrupts"): (401, OK, 403, 403, 403),
    ("GET", "api/v1/interrupts/<id>"): API_VIEW,
    ("POST", "api/v1/interrupts/<id>/decision"): API_OPERATE,
    ("POST", "api/v1/interrupts/<id>/claim"): API_OPERATE,
    ("GET", "api/v1/breakers"): API_VIEW,
    ("POST", "api/v1/breakers/<id>/reset"): API_OPERATE,
    ("POST", "api/v1/breakers/<id>/force-open"): API_OPERATE,
    ("GET", "api/v1/halts"): API_VIEW,
    ("POST", "api/v1/halts"): API_OPERATE,
    ("GET", "api/v1/halts/<id>"): API_VIEW,
    ("POST", "api/v1/halts/<id>/lift"): API_ADMIN,
    ("GET", "api/v1/alerts"): API_VIEW,
    ("POST", "api/v1/alerts/<id>/acknowledge"): API_OPERATE,
    ("GET", "api/v1/audit"): API_VIEW,
    ("GET", "api/v1/audit/verify"): API_ADMIN,  # reads the whole log (issue 18)
    # Realms (DESIGN.md section 8): people read them; only admins pair and grant.
    ("GET", "api/v1/realms"): API_VIEW,
    ("POST", "api/v1/realms"): API_ADMIN,
    ("POST", "api/v1/realms/<slug>/approve"): API_ADMIN,
    ("POST", "api/v1/realms/<slug>/refuse"): API_ADMIN,
    ("POST", "api/v1/realms/<slug>/suspend"): API_ADMIN,
    ("GET", "api/v1/realms/<slug>/grants"): API_VIEW,
    ("PUT", "api/v1/realms/<slug>/grants"): API_ADMIN,
    # The realm's public card; its wire hears only signed peers and client peers' tokens: a
    # person's session or an agent's token is nobody there.
    ("GET", ".well-known/agent-card.json"): EVERYONE,
    ("GET", "realms/"): PAGE,
    ("POST", "realms/pair"): PAGE_ADMIN,
    ("POST", "realms/<slug:slug>/approve"): PAGE_ADMIN,
    ("POST", "realms/<slug:slug>/refuse"): PAGE_ADMIN,
    ("POST", "realms/<slug:slug>/suspend"): PAGE_ADMIN,
    ("POST", "a2a"): (401,) * 5,
    ("POST", "a2a/push"): (401,) * 5,
    # Prometheus' scrape: the API's refusals (a status, not the login page) and its roles.
    ("GET", "metrics"): API_VIEW,
}
# Django's admin site: every route under it, checked through each model's list.
ADMIN_PREFIX = "admin/"


def routes(patterns=None, prefix: str = "") -> Iterator[str]:
    """Every route of the URL configuration, as its patterns spell it."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def test_every_route_has_a_rule(client, django_user_model):
    """A route added without saying who may use it fails here."""
    ruled = {route for _, route in RULES}
    unruled = sorted(
        route
        for route in set(routes())
        if route not in ruled and not route.startswith(ADMIN_PREFIX)
    )
    assert not unruled, f"routes without an authorisation rule: {unruled}"
    # And every API operation, method included, from the API's own description.
    client.force_login(django_user_model.objects.create_superuser("root", password="x"))
    spec = client.get("/api/v1/openapi.json").json()
    operations = {
        (method.upper(), path.lstrip("/").replace("{", "<").replace("}", ">"))
        for path, item in spec["paths"].items()
        for method in item
    }
    assert len(operations) > 25 and operations - set(RULES) == set(), (
        "API operations without a rule"
    )


def test_the_admin_site_is_closed_to_every_console_role(world):
    """Django's admin (read-only models) is for superusers: each of its pages without a
    parameter sends every console role to the admin's own login."""
    public = {"admin/login/", "admin/logout/", "admin/jsi18n/"}  # the way in, and out
    pages = sorted(
        r
        for r in set(routes())
        if r.startswith(ADMIN_PREFIX) and "<" not in r and "(" not in r and r not in public
    )
    assert len(pages) > 10
    for route in pages:
        for role in ROLES:
            response = _client(role, world).get("/" + route)
            assert response.status_code == 302, (route, role, response.status_code)
            assert response["Location"].startswith("/admin/login/"), (route, role)


@pytest.fixture
def world(django_user_model) -> dict:
    """One of everything a route can name, and a way to ask as each role."""
    sync_declarations()
    people = {
        role: with_role(django_user_model.objects.create_user(role, password="x"), role)
        for role in ("viewer", "operator", "admin")
    }
    agent = Agent.objects.get(domain__slug="ward", name="doser")
    run = drive(services.run_start(domain="ward", blueprint="ward-dose", input={}))
    interrupt = Interrupt.objects.get(run__root_id=run.root_id, status=Interrupt.Status.PENDING)
    halt, _ = halts.halt_engage(actor=people["admin"], scope=f"run:{run.pk}", reason="matrix")
    with transaction.atomic():
        alert = alert_raise(kind="matrix", title="a matrix alert")
    return {
        "people": people,
        # Signed like a real agent's requests, so that the matrix checks roles, not signatures.
        "agent": agent_bearer(agent),
        "ids": {
            "slug": "ward",
            "run_id": run.pk,
            "pk": interrupt.pk,
            "id": run.pk,
            "breaker_id": CircuitBreaker.objects.order_by("pk").first().pk,
            "uidb64": "MQ",
            "token": "set-password",
        },
        "by_route": {
            "oversight/halts/<int:pk>/lift": halt.pk,
            "oversight/alerts/<int:pk>/acknowledge": alert.pk,
            "api/v1/interrupts/<id>": interrupt.pk,
            "api/v1/interrupts/<id>/decision": interrupt.pk,
            "api/v1/interrupts/<id>/claim": interrupt.pk,
            "api/v1/breakers/<id>/reset": CircuitBreaker.objects.order_by("pk").first().pk,
            "api/v1/breakers/<id>/force-open": CircuitBreaker.objects.order_by("pk").first().pk,
            "api/v1/halts/<id>": halt.pk,
            "api/v1/halts/<id>/lift": halt.pk,
            "api/v1/alerts/<id>/acknowledge": alert.pk,
            "api/v1/agents/<id>/heartbeat": agent.pk,
        },
    }


def _url(route: str, world: dict) -> str:
    def fill(match: re.Match) -> str:
        name = match.group(1).split(":")[-1]
        if name in ("pk", "id") and route in world["by_route"]:
            return str(world["by_route"][route])
        return str(world["ids"][name])

    path = "/" + re.sub(r"<([^>]+)>", fill, route)
    return path + ("?scope=domain:ward" if route == "oversight/halts/new" else "")


def _client(role: str, world: dict) -> Client:
    if role == "agent":
        return world["agent"]
    return Client() if role == "anonymous" else signed_in(world["people"][role])


@pytest.mark.parametrize(("method", "route"), sorted(RULES))
def test_each_role_gets_the_intended_answer(world, method, route):
    url = _url(route, world)
    answers = {}
    for role in ROLES:
        client = _client(role, world)
        if method == "GET":
            response = client.get(url)
        else:  # an empty JSON body: enough to pass or fail authorisation, never a 5xx
            response = client.generic(method, url, "{}", content_type="application/json")
        answers[role] = response.status_code
    for role, expected, got in zip(ROLES, RULES[(method, route)], answers.values(), strict=True):
        if expected == OK:
            assert got not in (401, 403) and got < 500, (method, url, role, got)
        else:
            assert got == expected, (method, url, role, got)


WEBSOCKET_RULES = {"ws/console/": (False, False, True, True, True)}  # signed in, with a role


def test_every_websocket_route_has_a_rule():
    from console.routing import websocket_urlpatterns

    assert {str(p.pattern) for p in websocket_urlpatterns} == set(WEBSOCKET_RULES)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize("route", sorted(WEBSOCKET_RULES))
async def test_each_role_gets_the_intended_websocket_answer(route, django_user_model):
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.conf import settings

    from console.asgi import application

    def headers_for(role: str) -> list[tuple[bytes, bytes]]:
        headers = [(b"host", b"localhost"), (b"origin", b"http://localhost")]
        if role == "agent":  # a token is for the API; the socket knows sessions only
            sync_declarations()
            token = token_create(agent=Agent.objects.get(domain__slug="ward", name="doser"))
            return [*headers, (b"authorization", f"Bearer {token}".encode())]
        if role == "anonymous":
            return headers
        client = Client()
        user = django_user_model.objects.create_user(f"ws-{role}", password="x")
        client.force_login(with_role(user, role))
        cookie = (
            f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        )
        return [*headers, (b"cookie", cookie.encode())]

    for role, expected in zip(ROLES, WEBSOCKET_RULES[route], strict=True):
        socket = WebsocketCommunicator(
            application, "/" + route, headers=await sync_to_async(headers_for)(role)
        )
        connected, _ = await socket.connect()
        assert connected is expected, (route, role)
        await socket.disconnect()
