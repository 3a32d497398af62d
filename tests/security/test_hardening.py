"""Hardening (issue 7): sign-in throttled per username and address, the security headers and
the strict Content Security Policy on pages and API answers alike, cookie flags, and
`manage.py check --deploy` clean with README's production settings."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import timedelta
from urllib.parse import quote

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from console.auth import token_create
from loops.charts import STATE_COLOURS
from tests.conftest import ROOT, bearer, with_role

pytestmark = pytest.mark.django_db

PASSWORD = "a long passphrase"
STRICT = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
ATTACKER, OFFICE = "203.0.113.9", "198.51.100.20"


@pytest.fixture
def throttled(settings):
    """django-axes as in production (tests/settings.py leaves it on; said here for the reader)."""
    assert settings.AXES_ENABLED
    return settings


@pytest.fixture
def alice(django_user_model):
    return with_role(django_user_model.objects.create_user("alice", password=PASSWORD), "viewer")


def sign_in(username: str, password: str, address: str = ATTACKER, path: str = "/accounts/login/"):
    client = Client(REMOTE_ADDR=address)
    response = client.post(path, {"username": username, "password": password})
    return client, response


def signed_in_as(client: Client) -> str | None:
    return client.session.get("_auth_user_id")


# --- Login throttling ---------------------------------------------------------------------


def test_it_locks_a_username_and_address_out_after_the_limit(throttled, alice):
    assert django_settings.AXES_FAILURE_LIMIT == 5

    for _ in range(4):
        _, response = sign_in("alice", "wrong")
        assert response.status_code == 200
        assert "didn't match" in response.content.decode()
    _, fifth = sign_in("alice", "wrong")

    assert fifth.status_code == 429
    page = fifth.content.decode()
    assert "Sign-in paused" in page
    assert "<strong>alice</strong> was wrong 5 times" in page
    assert "Try again in <strong>15 minutes</strong>" in page
    assert fifth["Content-Security-Policy"] == STRICT


def test_the_right_password_is_refused_during_the_lockout(throttled, alice):
    for _ in range(5):
        sign_in("alice", "wrong")

    client, response = sign_in("alice", PASSWORD)

    assert response.status_code == 429
    assert signed_in_as(client) is None
    assert client.get("/").status_code == 302  # to the sign-in page: not signed in


def test_other_users_and_other_addresses_are_not_locked_out(throttled, alice, django_user_model):
    django_user_model.objects.create_user("bob", password=PASSWORD)
    for _ in range(5):
        sign_in("alice", "wrong")

    bob, from_here = sign_in("bob", PASSWORD)
    alice_elsewhere, from_the_office = sign_in("alice", PASSWORD, address=OFFICE)

    assert (from_here.status_code, from_the_office.status_code) == (302, 302)
    assert signed_in_as(bob) is not None
    assert signed_in_as(alice_elsewhere) == str(alice.pk)


def test_the_lockout_ends_after_the_cool_off(throttled, alice):
    for _ in range(5):
        sign_in("alice", "wrong")
    sixteen_minutes_ago = timezone.now() - timedelta(minutes=16)
    AccessAttempt.objects.filter(username="alice").update(attempt_time=sixteen_minutes_ago)

    client, response = sign_in("alice", PASSWORD)

    assert response.status_code == 302
    assert signed_in_as(client) == str(alice.pk)
    assert not AccessAttempt.objects.filter(username="alice").exists()  # forgotten on success


def test_the_admin_sign_in_is_throttled_too(throttled, django_user_model):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    for _ in range(5):
        _, response = sign_in("root", "wrong", path="/admin/login/")

    client, response = sign_in("root", PASSWORD, path="/admin/login/")

    assert response.status_code == 429
    assert "Sign-in paused" in response.content.decode()
    assert signed_in_as(client) is None


def test_api_tokens_are_not_throttled(throttled, alice):
    for _ in range(5):
        sign_in("alice", "wrong", address="127.0.0.1")  # the test client's address
    token = token_create(user=alice)

    wrong = [bearer(f"guess-{n}").get("/api/v1/audit").status_code for n in range(8)]
    right = bearer(token).get("/api/v1/audit")

    assert wrong == [401] * 8  # refused as unknown, never locked out
    assert right.status_code == 200  # alice's token works while her password sign-in is locked


# --- Headers ------------------------------------------------------------------------------

SECURITY_HEADERS = {
    "Content-Security-Policy": STRICT,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def test_a_page_carries_the_security_headers_and_the_strict_csp(client, alice):
    client.force_login(alice)

    response = client.get("/")

    assert response.status_code == 200
    for header, value in SECURITY_HEADERS.items():
        assert response[header] == value, header
    # Nothing inline that the policy would refuse: no inline script, handler or style.
    html = response.content.decode()
    assert "<script>" not in html and "style=" not in html and " onclick=" not in html
    assert '"allowEval": false' in html  # htmx evaluates nothing (base.html's htmx-config)


def test_an_api_answer_carries_them_too(alice):
    response = bearer(token_create(user=alice)).get("/api/v1/audit")

    assert response.status_code == 200
    for header, value in SECURITY_HEADERS.items():
        assert response[header] == value, header


def test_the_stack_legend_colours_need_no_style_attribute():
    """The legend under the stack icicle takes its colours from charts.STATE_COLOURS as SVG
    fill attributes, which the policy allows (style="" it would refuse)."""
    from django.template.loader import render_to_string

    from loops.models import Domain

    legend = [{"state": s, "count": 1, "colour": c} for s, c in STATE_COLOURS.items()]
    html = render_to_string(
        "loops/_domain_stack.html",
        {"domain": Domain(slug="lab"), "stack_chart": "<div></div>", "legend": legend},
    )

    assert "style=" not in html
    for colour in STATE_COLOURS.values():
        assert f'fill="{colour}"' in html


# --- Cookies ------------------------------------------------------------------------------


def test_session_and_csrf_cookies_are_httponly_and_samesite_lax(alice):
    client = Client()
    form = client.get("/accounts/login/")
    signed = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})

    csrf, session = form.cookies["csrftoken"], signed.cookies["sessionid"]
    assert (csrf["httponly"], csrf["samesite"]) == (True, "Lax")
    assert (session["httponly"], session["samesite"]) == (True, "Lax")
    assert session["max-age"] == 12 * 3600  # an operator's shift
    # SECURE_HTTPS is off by default, so the local console works on http://127.0.0.1.
    assert not csrf["secure"] and not session["secure"]


# --- Production settings (README) -----------------------------------------------------------


def production_env() -> dict[str, str]:
    """README's production settings, pointing at the suite's own PostgreSQL and Redis."""
    db = connection.settings_dict
    database_url = (
        f"postgres://{quote(db['USER'] or '')}:{quote(db['PASSWORD'] or '')}"
        f"@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SECURE_"))}
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "console.settings",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "console.example.org",
        "CSRF_TRUSTED_ORIGINS": "https://console.example.org",
        "SECURE_HTTPS": "true",
        "DATABASE_URL": database_url,
        "REDIS_URL": django_settings.REDIS_URL,
        "EMAIL_HOST": "smtp.example.org",
        "DEMO_ENABLED": "false",
    }


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_the_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_warns_without_https():
    env = {**production_env(), "SECURE_HTTPS": "false"}

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode == 1
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


def test_https_turns_on_secure_cookies_redirect_and_hsts():
    show = (
        "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, "
        "s.SECURE_CSP['upgrade-insecure-requests'], s.SECURE_PROXY_SSL_HEADER)"
    )
    env = {**production_env(), "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}

    result = manage("shell", "-c", show, env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "True True True 31536000 True True True ('HTTP_X_FORWARDED_PROTO', 'https')"
    )
