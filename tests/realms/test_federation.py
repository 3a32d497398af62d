"""Realms that pair, grant and call each other's loops (issue 15, DESIGN.md section 8,
CONCEPTS 44, 49, 50): three real consoles a, b and c, each with its own database, Redis
database, Daphne and worker, paired by their admins over the API, on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.realms.conftest import RealmProcess, drop_database, start_realm

GRANT = {"blueprints": "fed-*", "max_depth": 4, "budget": 5.0, "rate_per_minute": 600}


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


def admin_token(realm: RealmProcess) -> str:
    realm.manage("ensure_admin", "--username", "ada")
    return realm.manage("token", "--user", "ada", "--as", "ada").strip()


def identity(realm: RealmProcess, token: str) -> dict:
    status, body = realm.api("GET", "/api/v1/realms", token)
    assert status == 200, body
    return body


def peer(realm: RealmProcess, token: str, slug: str) -> dict | None:
    return next((p for p in identity(realm, token)["peers"] if p["slug"] == slug), None)


def pair(a: RealmProcess, b: RealmProcess, tokens: dict[str, str]) -> None:
    """a's admin asks with b's fingerprint; b's admin sees the request and approves."""
    fingerprint = identity(b, tokens[b.slug])["fingerprint"]
    body = {"url": b.url, "fingerprint": fingerprint}
    status, asked = a.api("POST", "/api/v1/realms", tokens[a.slug], body)
    assert status == 201, asked
    assert asked["status"] == "pending" and asked["we_approved"] and not asked["they_approved"]
    request = wait_for(lambda: peer(b, tokens[b.slug], a.slug))
    assert request["status"] == "pending" and request["they_approved"]
    status, approved = b.api("POST", f"/api/v1/realms/{a.slug}/approve", tokens[b.slug])
    assert status == 200 and approved["status"] == "approved", approved
    wait_for(lambda: peer(a, tokens[a.slug], b.slug)["status"] == "approved")


def grant(realm: RealmProcess, token: str, slug: str, **directions) -> None:
    status, body = realm.api("PUT", f"/api/v1/realms/{slug}/grants", token, directions)
    assert status == 200, body


@pytest.fixture(scope="module")
def federation() -> Iterator[tuple[dict[str, RealmProcess], dict[str, str]]]:
    """a, b and c, pairwise paired; each lets the others call its fed-* blueprints."""
    started: list[RealmProcess] = []
    try:
        for number, slug in enumerate("abc", start=1):
            started.append(start_realm(slug, number))
        realms = {r.slug: r for r in started}
        tokens = {slug: admin_token(r) for slug, r in realms.items()}
        for one, other in (("a", "b"), ("b", "c"), ("a", "c")):
            pair(realms[one], realms[other], tokens)
        for slug, realm in realms.items():
            for other in realms.keys() - {slug}:
                grant(realm, tokens[slug], other, inbound=GRANT, outbound=GRANT)
        yield realms, tokens
    finally:
        for realm in reversed(started):
            realm.stop()
            drop_database(realm.database)


def start(realm: RealmProcess, token: str, blueprint: str, value: dict) -> int:
    status, run = realm.api(
        "POST", "/api/v1/domains/fed/runs", token, {"blueprint": blueprint, "input": value}
    )
    assert status == 201, run
    return run["id"]


def ended(realm: RealmProcess, run_id: int, timeout: float = 60) -> dict:
    def done():
        row = realm.sql(
            "select state, result, exit_reason, exit_detail from loops_looprun where id = %s",
            (run_id,),
        )[0]
        return row if row[0] in ("succeeded", "exhausted", "failed", "cancelled") else None

    state, result, reason, detail = wait_for(done, timeout)
    return {"state": state, "result": result, "exit_reason": reason, "exit_detail": detail}


def test_a_stack_across_three_realms_returns_its_result_up_a_stack(federation):
    """a's main loop → b's sub-loop → c's micro-loop: c adds one, the result returns up."""
    realms, tokens = federation
    a, b, c = realms["a"], realms["b"], realms["c"]
    run_id = start(a, tokens["a"], "fed-main", {"n": 41})

    outcome = ended(a, run_id)

    assert outcome["state"] == "succeeded", outcome
    assert outcome["result"] == {"b:fed-sub": {"c:fed-micro": {"n": 42, "realm": "c"}}}
    # What c's agent spent came back up through b: a is charged it. Each callee ran under
    # the budget its grant caps a call at.
    assert a.sql("select cost from loops_looprun where id = %s", (run_id,)) == [(0.25,)]
    assert b.sql("select budget from loops_looprun where origin->>'realm' = 'a'") == [(5.0,)]
    # b ran fed-sub as a root run whose origin names a's frame; c ran fed-micro for b.
    [(frame_b, remote_b)] = a.sql(
        "select id, remote from loops_looprun where parent_id = %s", (run_id,)
    )
    assert remote_b["realm"] == "b" and remote_b["state"] == "completed"
    [(_, b_origin, b_state)] = b.sql(
        "select id, origin, state from loops_looprun where origin->>'realm' = 'a'"
    )
    assert b_origin["run"] == frame_b and b_origin["root"] == run_id and b_state == "succeeded"
    assert b_origin["path"] == ["a", "b"]
    [(c_origin,)] = c.sql("select origin from loops_looprun where origin is not null")
    assert c_origin["realm"] == "b" and c_origin["path"] == ["a", "b", "c"]
    assert c_origin["depth"] == 2  # a's main 0, its frame 1, b's frame 2: depth holds across
    # The API shows both ends of the boundary: the frame's remote, the peer run's origin.
    status, frame = a.api("GET", f"/api/v1/runs/{frame_b}", tokens["a"])
    assert status == 200 and frame["remote"]["realm"] == "b" and frame["origin"] is None
    assert frame["remote"]["state"] == "completed" and frame["kind"] == "sub"
    [(b_root,)] = b.sql("select id from loops_looprun where origin->>'realm' = 'a'")
    status, called = b.api("GET", f"/api/v1/runs/{b_root}", tokens["b"])
    assert called["origin"] == {"realm": "a", "run": frame_b, "root": run_id}


def test_a_call_back_into_a_realm_on_the_path_is_refused(federation):
    """a → b → a: b refuses the call into a (already on the path); the frames fail with the
    reason, and a starts nothing for it."""
    realms, tokens = federation
    a, b = realms["a"], realms["b"]
    before = a.sql("select count(*) from loops_looprun where origin is not null")[0][0]
    run_id = start(a, tokens["a"], "fed-cycle", {"n": 1})

    outcome = ended(a, run_id)

    assert outcome["state"] == "failed", outcome
    [(detail, remote)] = b.sql(
        "select exit_detail, remote from loops_looprun where remote->>'realm' = 'a'"
    )
    assert "cycle" in remote["reason"] and "a → b" in remote["reason"], remote
    assert "refused" in detail
    assert a.sql("select count(*) from loops_looprun where origin is not null")[0][0] == before


def test_a_deny_grant_rejects_the_call_and_starts_nothing(federation):
    """b narrows what a may call to nothing: a's call is REJECTED with the reason, recorded
    in both realms, and no run starts in b."""
    realms, tokens = federation
    a, b = realms["a"], realms["b"]
    grant(b, tokens["b"], "a", inbound={**GRANT, "blueprints": "nothing-*"}, outbound=GRANT)
    try:
        runs_before = b.sql("select count(*) from loops_looprun")[0][0]
        run_id = start(a, tokens["a"], "fed-direct", {"n": 1})

        outcome = ended(a, run_id)

        assert outcome["state"] == "failed", outcome
        [(remote, detail)] = a.sql(
            "select remote, exit_detail from loops_looprun where parent_id = %s", (run_id,)
        )
        assert remote["state"] == "rejected"
        assert "not in the inbound grant" in detail, detail
        [(refusal,)] = b.sql(
            "select refusal from realms_incoming where refusal <> '' order by id desc limit 1"
        )
        assert "fed-micro" in refusal and "not in the inbound grant" in refusal
        assert b.sql("select count(*) from loops_looprun")[0][0] == runs_before
    finally:
        grant(b, tokens["b"], "a", inbound=GRANT, outbound=GRANT)


def test_a_broadcast_reaches_peers_that_bid_or_decline_by_their_own_rules(federation):
    """a's fed-vote broadcasts to realms b and c: b bids (its adder can), c declines (its
    grant to a does not cover fed-micro); both answers are recorded as bids, b is selected
    and its run's result is the vote's."""
    realms, tokens = federation
    a, c = realms["a"], realms["c"]
    grant(c, tokens["c"], "a", inbound={**GRANT, "blueprints": "fed-sub"}, outbound=GRANT)
    try:
        run_id = start(a, tokens["a"], "fed-vote", {"n": 7})

        outcome = ended(a, run_id)

        bids = dict(
            (name, (decision, confidence, reason, selected))
            for name, decision, confidence, reason, selected in a.sql(
                "select g.name, b.decision, b.confidence, b.reason, b.selected "
                "from loops_bid b join loops_agent g on g.id = b.agent_id "
                "join loops_iteration i on i.id = b.iteration_id where i.run_id = %s",
                (run_id,),
            )
        )
        assert bids["realm-b"][0] == "bid" and bids["realm-b"][1] == 0.9 and bids["realm-b"][3]
        assert bids["realm-c"][0] == "decline" and not bids["realm-c"][3]
        assert "not in the inbound grant" in bids["realm-c"][2], bids["realm-c"]
        assert outcome["state"] == "succeeded", outcome
        assert outcome["result"] == {"n": 8, "realm": "b"}
        # b's run is a frame of a's stack (the vote's child), and c has none.
        [(frame, remote)] = a.sql(
            "select id, remote from loops_looprun where parent_id = %s", (run_id,)
        )
        assert remote["realm"] == "b" and remote["state"] == "completed"
        [(origin,)] = realms["b"].sql(
            "select origin from loops_looprun where (origin->>'run')::int = %s", (frame,)
        )
        assert origin["realm"] == "a" and origin["root"] == run_id
    finally:
        grant(c, tokens["c"], "a", inbound=GRANT, outbound=GRANT)
