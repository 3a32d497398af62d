"""The Realms page (DESIGN.md section 8): everyone with a role sees this realm's identity
and its peers; only admins pair, approve, refuse and suspend, each audited; a bad pairing
request is refused with its reason and writes nothing."""

from __future__ import annotations

import io

import pytest

from oversight.models import AuditEvent
from realms.cards import EXTENSION
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
    # The peers' fragment is pushed alike to everyone: its buttons are there, but only an
    # admin's page (.realms.can-pair) shows them; the views refuse a viewer anyway.
    assert "can-pair" not in page and "Ask to pair" not in page
    assert 'class="pair-only" hx-post="/realms/pharmacy/approve"' in page


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


# --- Issue 16: the page's content, live; the remote frames' view; the halt banner ----------


def paired(slug: str = "pharmacy", **fields) -> Peer:
    """An approved peer (both sides' admins approved)."""
    values = {
        "name": slug.title(), "url": "http://127.0.0.1:1", "public_key": KEY,
        "fingerprint": f"SHA256:{slug[0].upper() * 43}", "status": "approved",
        "we_approved": True, "they_approved": True, **fields,
    }  # fmt: skip
    return Peer.objects.create(slug=slug, **values)


def test_the_page_shows_each_peers_reachability_breaker_grants_and_calls(client, viewer):
    from datetime import timedelta

    from django.utils import timezone

    from loops.declare import sync_declarations
    from loops.models import Blueprint, Domain, LoopRun
    from oversight.models import CircuitBreaker
    from realms.models import Grant, Incoming

    sync_declarations()
    since = timezone.now() - timedelta(minutes=3)
    peer = paired(reachable=False, unreachable_since=since, latency_ms=12.4)
    CircuitBreaker.objects.create(
        name="peer-pharmacy", scope="peer", peer="pharmacy", metric="consecutive_failures",
        threshold=5, state="open", retry_at=timezone.now() + timedelta(seconds=30),
    )  # fmt: skip
    Grant.objects.create(
        peer=peer, direction="inbound", blueprints="fed-*", max_depth=3, budget=2.5,
        rate_per_minute=30, answer_interrupts=True, trace="full", lease_s=90,
    )  # fmt: skip
    Grant.objects.create(peer=peer, direction="outbound", blueprints="triage", trace="summary")
    domain, micro = Domain.objects.get(slug="fed"), Blueprint.objects.get(name="fed-micro")
    # A call in: a live root run this realm runs for the pharmacy; an ended one is not shown.
    for state in ("running", "succeeded"):
        run = LoopRun.objects.create(
            blueprint=micro, domain=domain, state=state, origin={"realm": "pharmacy", "run": 1}
        )
        Incoming.objects.create(peer=peer, key=f"call-{state}", run_id=run.pk)
    # A call out: an open remote frame toward the pharmacy.
    main = LoopRun.objects.create(
        blueprint=Blueprint.objects.get(name="fed-direct"), domain=domain, state="waiting"
    )
    frame = LoopRun.objects.create(
        blueprint=Blueprint.objects.get(name="b:fed-micro"), domain=domain, parent=main,
        root=main, depth=1, state="waiting",
        remote={"realm": "pharmacy", "blueprint": "second-opinion", "task": "7",
                "state": "working"},
    )  # fmt: skip

    response = client.get("/realms/")

    page = response.content.decode()
    assert response.status_code == 200
    assert 'ws-connect="/ws/console/?topics=realms"' in page  # live, like every page
    row = page[page.index('id="peer-pharmacy"') :]
    assert 'data-reachable="no"' in row and "unreachable</strong> since" in row
    assert since.strftime("%Y-%m-%d %H:%M:%S") in row and "12 ms" in row
    assert 'class="state state-open">Open</span>' in row
    for shown in ("fed-*", "depth 3", "budget 2.5", "30/min", "may answer interrupts"):
        assert shown in row
    assert "trace: full" in row and "lease 90 s" in row and "trace: summary" in row
    calls_in = row[row.index('class="calls-in"') : row.index('class="calls-out"')]
    assert calls_in.startswith('class="calls-in">1<br>') and "fed-micro #" in calls_in
    assert f'href="/loops/runs/{frame.pk}/">second-opinion #{frame.pk}</a>' in row
    # A viewer gets no controls: they are in the pushed fragment, shown by CSS to admins.
    assert "can-pair" not in page


def test_a_pairing_request_shows_with_its_buttons_for_admins(client, admin):
    asking()

    page = client.get("/realms/").content.decode()

    assert 'class="realms can-pair"' in page
    assert 'id="pair-request-pharmacy"' in page and 'hx-post="/realms/pharmacy/approve"' in page
    assert 'hx-post="/realms/pharmacy/refuse"' in page


def test_an_admin_approves_from_the_page_with_htmx_and_gets_the_peers_back(client, admin):
    peer = asking()

    response = client.post("/realms/pharmacy/approve", headers={"HX-Request": "true"})

    peer.refresh_from_db()
    assert response.status_code == 200 and peer.status == "approved"
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="realm-peers"') and "No pairing requests." in html
    assert "pharmacy: approved." in response.headers["HX-Trigger"]
    # Approving again is refused with the current state shown and a notice saying why.
    again = client.post("/realms/pharmacy/approve", headers={"HX-Request": "true"})
    assert again.status_code == 200 and "nothing to approve" in again.headers["HX-Trigger"]


def test_the_realms_page_and_its_actions_check_roles(client, outsider):
    asking()

    assert client.get("/realms/").status_code == 403
    assert client.post("/realms/pharmacy/approve").status_code == 403
    assert Peer.objects.get().status == "pending"


@pytest.mark.parametrize(
    ("path", "data", "status", "named"),
    [
        ("/realms/nowhere/approve", {}, 404, "no peer realm &#x27;nowhere&#x27;"),
        ("/realms/nowhere/refuse", {}, 404, "no peer realm"),
        ("/realms/pharmacy/suspend", {"reason": "x" * 2001}, 400, "longer than 2000"),
    ],
)
def test_a_bad_action_is_a_4xx_naming_what_is_wrong(client, admin, path, data, status, named):
    paired()

    response = client.post(path, data)

    assert response.status_code == status and named in response.content.decode()
    assert Peer.objects.get().status == "approved"
    assert client.get("/realms/pharmacy/approve").status_code == 405


def _frame_with_view(view: dict | None, *, reachable: bool = True):
    from loops.declare import sync_declarations
    from loops.models import Blueprint, Domain, LoopRun

    sync_declarations()
    paired("b", url="http://127.0.0.1:9", reachable=reachable)
    domain = Domain.objects.get(slug="fed")
    main = LoopRun.objects.create(
        blueprint=Blueprint.objects.get(name="fed-direct"), domain=domain, state="waiting"
    )
    remote = {"realm": "b", "blueprint": "fed-micro", "task": "41", "state": "working"}
    if view is not None:
        remote["view"] = view
    frame = LoopRun.objects.create(
        blueprint=Blueprint.objects.get(name="b:fed-micro"), domain=domain, parent=main,
        root=main, depth=1, state="waiting", remote=remote,
    )  # fmt: skip
    return main, frame


def test_the_live_stack_draws_a_remote_frame_with_its_realm_and_state(client, viewer):
    _, frame = _frame_with_view({"trace": "summary", "state": "halted", "frames": []})

    html = client.get("/loops/domains/fed/").content.decode()

    assert f"b: fed-micro #{frame.pk} · halted" in labels(html)  # the peer's run, as it says
    assert f'data-remote-ids="{frame.pk}"' in html and 'id="domain-fed-remote"' in html
    Peer.objects.filter(slug="b").update(reachable=False)
    html = client.get("/loops/domains/fed/").content.decode()
    assert f"b: fed-micro #{frame.pk} · unreachable" in labels(html)


def labels(html: str) -> list[str]:
    """The live stack icicle's labels, from the figure its div carries."""
    import json
    import re
    from html import unescape

    found = re.search(r'id="domain-fed-icicle" data-figure="([^"]*)"', html)
    assert found is not None
    return json.loads(unescape(found[1]))["data"][0]["labels"]


def test_a_remote_frame_shows_what_the_grant_lets_the_caller_see(client, viewer):
    events = [{"seq": 3, "run": 41, "type": "iteration.closed", "ts": "t", "payload": "{}"}]
    view = {
        "trace": "full", "state": "running", "iteration": 4, "cost": 0.75, "exit_reason": "",
        "frames": [{"blueprint": "c:fed-micro", "state": "waiting", "realm": "c",
                    "remote_state": "working", "depth": 1}],
        "events": events,
    }  # fmt: skip
    main, frame = _frame_with_view(view)

    panel = client.get(f"/loops/runs/{frame.pk}/remote").content.decode()
    page = client.get(f"/loops/runs/{frame.pk}/").content.decode()

    for html in (panel, page):
        assert 'href="http://127.0.0.1:9/loops/runs/41/"' in html  # the run in b's console
        assert "grant lets this realm see: <strong" in html and ">full</strong>" in html
        assert "<dd>4</dd>" in html and "<dd>0.75</dd>" in html
        assert "c:fed-micro · waiting" in html and "(in realm c: working)" in html
        assert "iteration.closed" in html
    assert client.get(f"/loops/runs/{main.pk}/remote").status_code == 404  # runs here
    assert client.get("/loops/runs/999999/remote").status_code == 404


def test_the_callee_sends_the_view_its_inbound_grant_allows(roles):
    from loops.declare import sync_declarations
    from loops.models import Blueprint, Domain, Event, LoopRun
    from realms.frames import task_of
    from realms.models import Grant, Incoming
    from realms.sight import kept

    sync_declarations()
    peer = paired("a")
    grant = Grant.objects.create(peer=peer, direction="inbound", blueprints="*", trace="summary")
    domain = Domain.objects.get(slug="fed")
    run = LoopRun.objects.create(
        blueprint=Blueprint.objects.get(name="fed-sub"), domain=domain, state="running",
        iteration=2, cost=0.5, origin={"realm": "a", "run": 9, "root": 8},
    )  # fmt: skip
    LoopRun.objects.filter(pk=run.pk).update(root=run)
    LoopRun.objects.create(
        blueprint=Blueprint.objects.get(name="c:fed-micro"), domain=domain, parent=run,
        root=run, depth=1, state="waiting", remote={"realm": "c", "state": "working"},
    )  # fmt: skip
    Event.objects.create(root=run, run=run, seq=1, type="run.started", payload={"n": 1})
    Incoming.objects.create(peer=peer, key="a:call:9", run_id=run.pk)
    run.refresh_from_db()

    summary = task_of(run)["metadata"][EXTENSION]["view"]
    grant.trace = "full"
    grant.save()
    full = task_of(run)["metadata"][EXTENSION]["view"]

    assert summary["trace"] == "summary" and "events" not in summary
    assert (summary["state"], summary["iteration"], summary["cost"]) == ("running", 2, 0.5)
    assert summary["frames"] == [
        {"blueprint": "c:fed-micro", "state": "waiting", "depth": 1, "realm": "c",
         "remote_state": "working"}
    ]  # fmt: skip
    assert [e["type"] for e in full["events"]] == ["run.started"]
    # The caller keeps it bounded and typed, whatever a peer sends.
    assert kept({"view": {"trace": "full", "iteration": True, "events": ["x", {"seq": "1"}]}})[
        "view"
    ]["events"] == [{"seq": 0, "run": 0, "type": "", "ts": "", "payload": ""}]
    assert kept({"view": "everything"}) == {} and kept(None) == {}
    # Work this realm started itself carries no view.
    own = LoopRun.objects.create(blueprint=run.blueprint, domain=domain, state="running")
    assert task_of(own)["metadata"][EXTENSION]["view"] is None


def test_the_banner_counts_the_peer_realms_that_confirmed_a_halt(client, operator):
    from django.utils import timezone

    from oversight.models import Halt

    paired("b")
    paired("c")
    halt = Halt.objects.create(scope="global", kind="global", reason="drill")
    for n, (slug, delivered) in enumerate([("b", True), ("b", True), ("c", False)]):
        Outgoing.objects.create(
            peer=Peer.objects.get(slug=slug), method="loopstacks/Halt", key=f"h{n}",
            params={"halt": {"id": halt.pk, "realm": "a"}},
            delivered_at=timezone.now() if delivered else None,
        )  # fmt: skip

    page = client.get("/").content.decode()

    assert "1 of 2 peer realms confirmed" in page
    Outgoing.objects.filter(key="h2").update(delivered_at=timezone.now())
    assert "2 of 2 peer realms confirmed" in client.get("/").content.decode()


def test_a_halt_engaged_for_a_peer_names_its_realm_not_system(client, operator):
    from oversight.models import Halt

    Halt.objects.create(
        scope="global", kind="global", reason="halted by realm a (ada): drill across"
    )

    page = client.get("/").content.decode()

    assert 'data-realm="a"' in page and "— halted by realm a (ada): drill across" in page
    assert "by system" not in page
