"""The Realms page (DESIGN.md section 8): everyone with a role sees this realm's identity
and its peers; only admins pair, approve, refuse and suspend, each audited; a bad pairing
request is refused with its reason and writes nothing."""

from __future__ import annotations

import io

import pytest

from oversight.models import AuditEvent
from realms.identity import me
from realms.models import Outgoing, Peer

pytestmark = pytest.mark.django_db

KEY = "r8mTYNsYgkXQn8HXxh2CCABMPFDiKP7ekCwEvUOegac"  # a raw Ed25519 public key, base64url


def asking() -> Peer:
    """A realm whose signed pairing request arrived: pending, for this realm's admins."""
    return Peer.objects.create(
        slug="pharmacy", name="Regional pharmacy", url="http://127.0.0.1:1",
        fingerprint="SHA256:WvR8Gderum6DU28XN7Azzwgix8FZH6hX4Gedf+IP108",
        public_key=KEY, they_approved=True,
    )  # fmt: skip


def test_a_viewer_sees_this_realm_and_its_peers_but_no_actions(client, viewer):
    asking()

    page = client.get("/realms/").content.decode()

    assert me().fingerprint in page and me().url in page
    assert "pharmacy" in page and "asks to pair: check the fingerprint" in page
    assert "Approve" not in page and "Ask to pair" not in page


def test_an_admin_approves_a_pairing_request_and_it_is_audited(client, admin):
    peer = asking()

    assert "Approve" in client.get("/realms/").content.decode()
    response = client.post("/realms/pharmacy/approve")

    peer.refresh_from_db()
    assert response.status_code == 302 and peer.status == "approved" and peer.we_approved
    assert AuditEvent.objects.filter(verb="realm.approved", target_id=str(peer.pk)).exists()
    # The peer hears of it by a signed message, queued with the change.
    assert Outgoing.objects.filter(peer=peer, method="loopstacks/PairApproved").exists()
    client.post("/realms/pharmacy/suspend", {"reason": "audit found a leak"})
    peer.refresh_from_db()
    assert peer.status == "suspended"


def test_an_operator_may_not_approve(client, operator):
    peer = asking()

    response = client.post("/realms/pharmacy/approve")

    peer.refresh_from_db()
    assert response.status_code == 403 and peer.status == "pending"


@pytest.mark.parametrize(
    ("form", "named"),
    [
        ({"url": "not a url", "fingerprint": "SHA256:" + "A" * 43}, "Enter a valid URL"),
        ({"url": "http://127.0.0.1:1", "fingerprint": "md5:abc"}, "Enter a valid value"),
        # Nothing answers there: refused with the address named, nothing written.
        ({"url": "http://127.0.0.1:1", "fingerprint": "SHA256:" + "A" * 43}, "no realm answers"),
    ],
)
def test_a_bad_pairing_request_is_refused_with_its_reason(client, admin, form, named):
    response = client.post("/realms/pair", form)

    assert response.status_code in (400, 404) and named in response.content.decode()
    assert not Peer.objects.exists() and not Outgoing.objects.exists()


def test_the_realm_command_shows_grants_and_refuses_what_it_cannot_do(roles):
    from django.core.management import CommandError, call_command

    from realms.models import Grant
    from tests.conftest import person

    person("ada", "admin")
    person("otto", "operator")
    peer = asking()
    peer.status, peer.we_approved = "approved", True
    peer.save()
    out = io.StringIO()

    call_command("realm", "show", stdout=out)
    call_command(
        "realm", "grant", "pharmacy", "--direction", "inbound", "--blueprints", "triage-*",
        "--max-depth", "2", "--budget", "1.5", "--user", "ada", stdout=out,
    )  # fmt: skip

    assert me().fingerprint in out.getvalue() and "pharmacy" in out.getvalue()
    grant = Grant.objects.get(peer=peer, direction="inbound")
    assert (grant.blueprints, grant.max_depth, grant.budget) == ("triage-*", 2, 1.5)
    assert AuditEvent.objects.filter(verb="realm.granted", target_id=str(peer.pk)).exists()
    with pytest.raises(CommandError, match="admin role"):
        call_command("realm", "suspend", "pharmacy", "--user", "otto")
    with pytest.raises(CommandError, match="no realm answers"):
        call_command(
            "realm", "pair", "--url", "http://127.0.0.1:1",
            "--fingerprint", "SHA256:" + "A" * 43, "--user", "ada",
        )  # fmt: skip


def test_the_halt_confirmation_names_the_realms_the_halt_will_reach(client, operator):
    from loops import services
    from loops.declare import sync_declarations
    from loops.models import Blueprint, LoopRun

    sync_declarations()
    run = services.run_start(domain="fed", blueprint="fed-direct", input={})
    for realm in ("b", "b", "c"):
        LoopRun.objects.create(
            blueprint=Blueprint.objects.get(name="b:fed-micro"),  # the remote frame's mirror
            domain=run.domain, parent=run, root=run, depth=1, state="waiting",
            remote={"realm": realm, "task": "", "state": "submitted"},
        )  # fmt: skip

    page = client.get(f"/oversight/halts/new?scope=run:{run.pk}").content.decode()
    elsewhere = client.get("/oversight/halts/new?scope=domain:lab").content.decode()

    assert (
        "realm b</strong> (2 remote frames)" in page and "realm c</strong> (1 remote frame)" in page
    )
    assert "It also reaches" not in elsewhere
