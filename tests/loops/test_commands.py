"""The token and status management commands (DESIGN.md section 5)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from common.signing import shared_secret
from loops.models import Agent, ApiToken, Blueprint, LoopRun
from tests.conftest import signed_bearer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
State = LoopRun.State


def _token(*args: str) -> str:
    out = StringIO()
    call_command("token", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def test_it_prints_a_token_that_signs_a_user_in(viewer):
    token = _token("--user", "vera")

    response = Client(headers={"Authorization": f"Bearer {token}"}).get("/api/v1/runs")

    assert response.status_code == 200
    assert len(token) >= 40 and "\n" not in token
    assert ApiToken.objects.get(user=viewer).token_hash != token  # only the hash is stored


def test_it_prints_a_token_for_an_agent_that_beats():
    agent = Agent.objects.get(name="squarer")
    token = _token("--agent", str(agent.pk))

    signed = signed_bearer(token, shared_secret(agent.config))
    response = signed.post(f"/api/v1/agents/{agent.pk}/heartbeat")

    assert response.status_code == 200
    assert ApiToken.objects.get().agent == agent


def test_it_prints_a_new_token_each_time(viewer):
    assert _token("--user", "vera") != _token("--user", "vera")
    assert ApiToken.objects.filter(user=viewer).count() == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--user", "nobody"), "There is no user 'nobody'."),
        (("--agent", "999999"), "There is no agent 999999."),
    ],
)
def test_it_names_an_unknown_owner(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("token", *args, stdout=StringIO())

    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("args", [(), ("--user", "vera", "--agent", "1")])
def test_it_needs_exactly_one_owner(viewer, args):
    with pytest.raises(CommandError, match=r"--user|--agent"):
        call_command("token", *args, stdout=StringIO())

    assert not ApiToken.objects.exists()


def _run(blueprint: str, *, parent: LoopRun | None = None, **fields) -> LoopRun:
    bp = Blueprint.objects.get(name=blueprint)
    return LoopRun.objects.create(
        blueprint=bp,
        domain=bp.domain,
        parent=parent,
        root=parent.root if parent else None,
        depth=parent.depth + 1 if parent else 0,
        **fields,
    )


def test_it_prints_domains_and_live_runs():
    main = _run("lab-main", state=State.WAITING, iteration=2)
    sub = _run("lab-sub", parent=main, state=State.RUNNING, iteration=1)
    done = _run("lab-main", state=State.SUCCEEDED)
    out = StringIO()

    call_command("status", stdout=out)

    text = out.getvalue()
    assert "lab" in text and "processing" in text and "2 live" in text
    assert "succeeded 1" in text
    rows = [line.split() for line in text.splitlines()]
    assert [str(main.pk), "lab-main", "0", "waiting", "2"] in rows
    assert [str(sub.pk), "lab-sub", "1", "running", "1"] in rows
    assert not [row for row in rows if row and row[0] == str(done.pk)]


def test_it_says_when_nothing_is_live():
    out = StringIO()

    call_command("status", stdout=out)

    assert "standby" in out.getvalue()
    assert "No run is live." in out.getvalue()
