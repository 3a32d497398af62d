"""API tokens: created, rotated with a grace, revoked and listed by `manage.py token`, revoked
in the Django admin; each change audited as the acting person (H5), no token ever shown again.
"""

from __future__ import annotations

import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from common.signing import shared_secret
from console.auth import token_create
from loops.models import Agent, ApiToken
from oversight.models import AuditEvent
from tests.conftest import bearer, post_json, signed_bearer, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]


# The personas of tests/conftest.py, by the names this module's tests call them.


@pytest.fixture
def ada(admin):
    return admin


@pytest.fixture
def vera(viewer):
    return viewer


def _token(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("token", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def _works(token: str) -> bool:
    status = bearer(token).get("/api/v1/runs").status_code
    assert status in (200, 401)
    return status == 200


def _beats(token: str, agent: Agent) -> int:
    client = signed_bearer(token, shared_secret(agent.config))
    return post_json(client, f"/api/v1/agents/{agent.pk}/heartbeat").status_code


def _verbs() -> list[tuple[str, str, str]]:
    return list(AuditEvent.objects.order_by("pk").values_list("verb", "actor_name", "target_id"))


def test_it_audits_a_new_token_as_the_acting_admin(ada, vera):
    token, _ = _token("--user", "vera", "--as", "ada")

    row = ApiToken.objects.get(user=vera)
    assert _works(token)
    assert _verbs() == [("token.created", "ada", str(row.pk))]
    assert AuditEvent.objects.get().data["owner"] == "user vera"


def test_it_keeps_an_old_token_working_until_the_rotations_grace_ends(ada, vera):
    old = token_create(user=vera)
    old_row = ApiToken.objects.get(user=vera)

    new, said = _token("--user", "vera", "--rotate", "--grace", "2", "--as", "ada")

    assert new != old and _works(new) and _works(old)
    assert f"The older token(s) {old_row.pk} keep working until" in said
    old_row.refresh_from_db()
    assert old_row.revoked_at > timezone.now()
    time.sleep((old_row.revoked_at - timezone.now()).total_seconds() + 0.1)
    assert not _works(old)
    assert _works(new)
    new_row = ApiToken.objects.exclude(pk=old_row.pk).get(user=vera)
    assert _verbs() == [
        ("token.rotated", "ada", str(old_row.pk)),
        ("token.created", "ada", str(new_row.pk)),
    ]
    rotated = AuditEvent.objects.get(verb="token.rotated")
    assert rotated.before == {"revoked_at": None} and rotated.after["revoked_at"]


def test_it_rotates_an_agents_token_so_both_sign_in_during_the_grace(ada):
    doser = Agent.objects.get(domain__slug="ward", name="doser")
    old = token_create(agent=doser)

    new, _ = _token("--agent", str(doser.pk), "--rotate", "--as", "ada")

    assert (_beats(old, doser), _beats(new, doser)) == (200, 200)
    expires = ApiToken.objects.filter(agent=doser).exclude(revoked_at=None).get().revoked_at
    assert 3590 < (expires - timezone.now()).total_seconds() <= 3600  # the default grace


def test_it_keeps_a_sooner_end_when_rotating_again(ada, vera):
    token_create(user=vera)
    _token("--user", "vera", "--rotate", "--grace", "60", "--as", "ada")
    first = ApiToken.objects.get(user=vera, revoked_at__isnull=False)

    _token("--user", "vera", "--rotate", "--grace", "600", "--as", "ada")

    first_end = first.revoked_at
    first.refresh_from_db()
    assert first.revoked_at == first_end  # not extended by the longer grace


def test_it_revokes_a_token_at_once(ada, vera):
    token = token_create(user=vera)
    row = ApiToken.objects.get(user=vera)
    assert _works(token)

    said, _ = _token("--revoke", str(row.pk), "--as", "ada")

    assert not _works(token)
    assert said == f"Token {row.pk} of user vera revoked."
    event = AuditEvent.objects.get()
    assert (event.verb, event.actor_name, event.target_id) == ("token.revoked", "ada", str(row.pk))
    assert event.before == {"revoked_at": None} and event.after["revoked_at"]


def test_it_revokes_a_token_in_its_grace_at_once(ada, vera):
    old = token_create(user=vera)
    _token("--user", "vera", "--rotate", "--as", "ada")
    old_row = ApiToken.objects.get(user=vera, revoked_at__isnull=False)

    _token("--revoke", str(old_row.pk), "--as", "ada")

    assert not _works(old)


def test_it_says_when_a_revoked_token_is_revoked_again(ada, vera):
    token_create(user=vera)
    row = ApiToken.objects.get(user=vera)
    _token("--revoke", str(row.pk), "--as", "ada")

    said, _ = _token("--revoke", str(row.pk), "--as", "ada")

    assert "nothing changed" in said
    assert AuditEvent.objects.count() == 1


def test_it_revokes_all_of_an_agents_tokens(ada):
    doser = Agent.objects.get(domain__slug="ward", name="doser")
    tokens = [token_create(agent=doser) for _ in range(2)]
    other = token_create(agent=Agent.objects.get(domain__slug="lab", name="squarer"))

    said, _ = _token("--agent", str(doser.pk), "--revoke-all", "--as", "ada")

    assert said.startswith("Revoked 2 token(s) of agent ward/doser")
    assert [_beats(token, doser) for token in tokens] == [401, 401]
    squarer = Agent.objects.get(domain__slug="lab", name="squarer")
    assert _beats(other, squarer) == 200
    assert [verb for verb, _, _ in _verbs()] == ["token.revoked", "token.revoked"]


def test_it_lists_tokens_without_showing_one(ada, vera):
    doser = Agent.objects.get(domain__slug="ward", name="doser")
    tokens = [token_create(user=vera), token_create(agent=doser), token_create(user=vera)]
    revoked = ApiToken.objects.filter(user=vera).order_by("pk").first()
    _token("--revoke", str(revoked.pk), "--as", "ada")
    _token("--user", "vera", "--rotate", "--as", "ada")

    listed, _ = _token("--list")
    of_vera, _ = _token("--list", "--user", "vera")

    for secret in [*tokens, *ApiToken.objects.values_list("token_hash", flat=True)]:
        assert secret not in listed
    lines = listed.splitlines()
    assert lines[0] == "id\towner\tcreated\tlast used\tstate"
    assert len(lines) == 1 + ApiToken.objects.count()
    assert f"{revoked.pk}\tuser vera\t" in listed and "\trevoked " in listed
    assert "\tagent ward/doser\t" in listed and "\texpires " in listed and "\tactive" in listed
    assert "doser" not in of_vera and len(of_vera.splitlines()) == 1 + 3


def test_it_refuses_someone_without_the_admin_role(vera):
    with pytest.raises(CommandError, match="This needs the admin role"):
        _token("--user", "vera", "--as", "vera")

    assert not ApiToken.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--revoke", "999999"), "There is no token 999999."),
        (("--revoke", "999999", "--user", "ada"), "There is no token 999999 of ada."),
        (("--revoke-all",), "Name the owner: --user USERNAME or --agent ID."),
        (("--rotate",), "Name the owner"),
        (("--list", "--agent", "999999"), "There is no agent 999999."),
        (("--rotate", "--user", "nobody"), "There is no user 'nobody'."),
        (("--user", "ada", "--grace", "5"), "--grace goes with --rotate."),
        (("--user", "ada", "--rotate", "--grace", "-1"), "--grace must be 0 seconds or more"),
        (("--user", "ada", "--as", "nobody"), "There is no active user 'nobody'"),
    ],
)
def test_it_names_what_is_wrong_and_changes_nothing(ada, args, message):
    token_create(user=ada)
    before = list(ApiToken.objects.values_list("pk", "revoked_at"))

    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _token(*args)

    assert list(ApiToken.objects.values_list("pk", "revoked_at")) == before
    assert not AuditEvent.objects.exists()


# --- The Django admin -----------------------------------------------------------------------


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root-admin", password="x")


def test_the_admin_revokes_selected_tokens_and_audits(superuser, vera):
    tokens = [token_create(user=vera) for _ in range(2)]
    keep = token_create(user=vera)
    ids = list(ApiToken.objects.order_by("pk").values_list("pk", flat=True))[:2]

    response = signed_in(superuser).post(
        "/admin/loops/apitoken/", {"action": "revoke", "_selected_action": ids}, follow=True
    )

    assert response.status_code == 200
    assert "Revoked 2 token(s)." in response.content.decode()
    assert [_works(token) for token in tokens] == [False, False]
    assert _works(keep)
    assert _verbs() == [("token.revoked", "root-admin", str(pk)) for pk in ids]
    assert AuditEvent.objects.first().note == "revoked in the admin"


def test_the_admin_never_shows_a_token_or_its_hash(superuser, vera):
    token = token_create(user=vera)
    row = ApiToken.objects.get()
    client = signed_in(superuser)

    pages = [
        client.get("/admin/loops/apitoken/").content.decode(),
        client.get(f"/admin/loops/apitoken/{row.pk}/change/").content.decode(),
    ]

    for page in pages:
        assert token not in page and row.token_hash not in page
    assert "Revoke selected tokens" in pages[0]
    assert client.get("/admin/loops/apitoken/add/").status_code == 403


def test_the_admin_offers_no_revocation_without_the_admin_role(django_user_model, vera):
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("sam", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    token = token_create(user=vera)
    client = Client()
    client.force_login(staff)

    page = client.get("/admin/loops/apitoken/").content.decode()
    client.post(
        "/admin/loops/apitoken/",
        {"action": "revoke", "_selected_action": [ApiToken.objects.get().pk]},
    )

    assert "Revoke selected tokens" not in page
    assert _works(token)
    assert not AuditEvent.objects.exists()
