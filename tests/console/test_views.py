from __future__ import annotations

import re

import pytest

from loops.declare import sync_declarations

pytestmark = pytest.mark.django_db


def test_it_sends_anonymous_visitors_to_sign_in(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_it_shows_the_console_with_its_live_socket_to_a_signed_in_user(client, viewer):
    client.force_login(viewer)

    html = client.get("/").content.decode()

    assert 'ws-connect="/ws/console/?topics=overview"' in html
    assert 'id="ws-status"' in html
    assert 'id="workers"' in html


def test_it_serves_htmx_and_plotly_from_its_own_static_files(client, viewer):
    from loops.declare import sync_declarations

    sync_declarations()
    client.force_login(viewer)
    # plotly.js only where something is charted with it: the domain page.
    assert "plotly" not in client.get("/").content.decode()
    html = client.get("/loops/domains/lab/").content.decode()
    scripts = re.findall(r'<script src="([^"]+)"', html)

    assert not [src for src in scripts if "//" in src], "no script may come from another host"
    for name in ("htmx-2", "hx-ws-2", "plotly.min", "app"):
        src = next(src for src in scripts if name in src)
        response = client.get(src)
        assert response.status_code == 200, src
        assert "javascript" in response["Content-Type"]


def test_it_signs_in_with_the_login_form(client, django_user_model):
    django_user_model.objects.create_user("viewer", password="a long passphrase")

    response = client.post(
        "/accounts/login/?next=/",
        {"username": "viewer", "password": "a long passphrase", "next": "/"},
    )

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_it_rejects_a_wrong_password_with_a_message(client, django_user_model):
    django_user_model.objects.create_user("viewer", password="a long passphrase")

    response = client.post("/accounts/login/", {"username": "viewer", "password": "wrong"})

    assert response.status_code == 200
    assert "didn't match" in response.content.decode()


def test_it_lists_the_declared_domains_with_their_state(client, viewer):
    sync_declarations()
    client.force_login(viewer)

    html = client.get("/").content.decode()

    assert 'id="domain-lab-card"' in html
    assert 'id="domain-arena-card"' in html
    assert "standby" in html  # no run is live


def test_it_tells_a_user_without_a_role_to_ask_for_one(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("nobody"))

    response = client.get("/")

    assert response.status_code == 403
    assert "no role" in response.content.decode()
