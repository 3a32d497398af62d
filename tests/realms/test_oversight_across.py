"""Oversight across realms (issue 16, DESIGN.md H8 to H10) on three real consoles a, b and c:

- H9: an interrupt raised in b, in work a asked for, shows in a's inbox too when both grants
  allow it, with its whole address; the first decision wins across both realms (operators of
  both, behind a barrier) and every loser gets 409 naming the person, the realm and the
  time; both realms audit it; a decision in b takes a's copy out of a's inbox.
- H10: b cannot reach a (a's web process stopped) for longer than b's grant's lease: b
  pauses a's work and alerts; a back, it resumes, nothing lost or duplicated; a remote frame
  ends only with the peer's answer; the caller sees the peer unreachable.
- H8: a global halt in a halts the work a caused in b, not b's own; a halt queued while b
  is away still arrives when b is back."""

from __future__ import annotations

import re
import threading
from datetime import datetime

from tests.realms.conftest import RealmProcess
from tests.realms.test_federation import GRANT, federation, grant, peer, start, wait_for

__all__ = ["federation"]

COPY = (
    "select id, (remote->>'id')::int from oversight_interrupt where status = 'pending' "
    "and remote is not null and run_id in (select id from loops_looprun where root_id = %s)"
)
ORIGINAL = "select status, decided_by_name, decided_realm, decided_at from oversight_interrupt "
ORIGINAL += "where id = %s"
# The root run b started for a call from the stack of a's run (origin's root: a's run).
CALLED = "select id, state, paused_by from loops_looprun where origin is not null "
CALLED += "and parent_id is null and (origin->>'root')::int = %s order by id"
ITERATIONS = "select count(*), count(distinct (run_id, number)) from loops_iteration "
ITERATIONS += "where run_id = %s"


def token_of(realm: RealmProcess, name: str, role: str = "admin") -> str:
    """An API token of a person of the realm with the role (made if it is not there)."""
    make = (
        "from django.contrib.auth.models import Group, User; "
        f"u, _ = User.objects.get_or_create(username={name!r}); "
        f"u.groups.add(Group.objects.get(name={role!r}))"
    )
    realm.manage("shell", "-c", make)
    return realm.manage("token", "--user", name, "--as", "ada").strip()


def answering(a: RealmProcess, b: RealmProcess, tokens, *, allowed: bool = True) -> None:
    """b lets a's operators answer its interrupts (inbound), a wants to (outbound)."""
    grant(b, tokens["b"], "a", inbound=GRANT | {"answer_interrupts": allowed}, outbound=GRANT)
    grant(a, tokens["a"], "b", inbound=GRANT, outbound=GRANT | {"answer_interrupts": True})


def called_in_b(a: RealmProcess, b: RealmProcess, run_id: int) -> int:
    """The root run b started for a's frame under run_id (its id), once it started."""
    try:
        return wait_for(lambda: b.sql(CALLED, (run_id,)), 60)[0][0]
    except BaseException:
        frames = "select id, state, remote, exit_detail from loops_looprun where root_id = %s"
        print("a's frames:", a.sql(frames, (run_id,)))
        print(
            "a's outbox:",
            a.sql(
                "select key, method, last_error, delivered_at, failed_at "
                "from realms_outgoing order by id desc limit 5"
            ),
        )
        print(
            "b's roots:",
            b.sql(
                "select id, state, origin from loops_looprun "
                "where origin is not null order by id desc limit 3"
            ),
        )
        raise


def copy_of(a: RealmProcess, run_id: int) -> tuple[int, int]:
    """(the copy's id in a, the original's id in b), once the copy is in a's inbox."""
    return wait_for(lambda: (a.sql(COPY, (run_id,)) or [None])[0], 60)


def test_one_decision_wins_wherever_it_is_taken(federation):
    realms, tokens = federation
    a, b = realms["a"], realms["b"]
    answering(a, b, tokens)
    run_id = start(a, tokens["a"], "fed-human-direct", {})
    copy, original = copy_of(a, run_id)

    status, shown = a.api("GET", f"/api/v1/interrupts/{copy}", tokens["a"])
    assert status == 200, shown
    assert shown["remote"]["realm"] == "b" and shown["remote"]["id"] == original
    assert shown["reason"] == "confirm the dose" and shown["severity"] == "critical"
    assert shown["address"]["main"]["blueprint"] == "fed-human-direct"
    assert shown["address"]["remote"]["realm"] == "b"
    assert shown["address"]["remote"]["micro"]["blueprint"] == "fed-human"
    status, there = b.api("GET", f"/api/v1/interrupts/{original}", tokens["b"])
    assert status == 200 and shown["deadline_at"] == there["deadline_at"]  # b's deadline

    # b's admins take the right back: a's decision is refused there, and nothing changes.
    answering(a, b, tokens, allowed=False)
    body = {"decision": "approve", "comment": "fine"}
    status, refused = a.api("POST", f"/api/v1/interrupts/{copy}/decision", tokens["a"], body)
    assert status == 403, refused
    assert "grant does not let realm a's operators answer" in refused["detail"]
    assert b.sql(ORIGINAL, (original,))[0][0] == "pending"
    answering(a, b, tokens)

    # Three operators in each realm decide at once: exactly one wins.
    names = {"a": ["ada", "abe", "amy"], "b": ["ada", "bob", "bea"]}
    deciders = [
        (slug, name, token_of(realms[slug], name, "operator"))
        for slug in "ab"
        for name in names[slug]
    ]
    barrier = threading.Barrier(len(deciders))
    answers: list[tuple[str, str, int, dict]] = []

    def decide(slug: str, name: str, token: str) -> None:
        target = copy if slug == "a" else original
        body = {"decision": "approve", "comment": f"{name} of {slug}"}
        barrier.wait()
        status, answer = realms[slug].api(
            "POST", f"/api/v1/interrupts/{target}/decision", token, body
        )
        answers.append((slug, name, status, answer))

    threads = [threading.Thread(target=decide, args=d) for d in deciders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(status for *_, status, _ in answers) == [200] + [409] * 5, answers
    [(realm, name, _, _)] = [a for a in answers if a[2] == 200]
    status_b, by_name, decided_realm, decided_at = b.sql(ORIGINAL, (original,))[0]
    assert status_b == "decided"
    assert (by_name, decided_realm) == ((name, "a") if realm == "a" else ("", ""))
    for slug, loser, _, lost in (a for a in answers if a[2] == 409):
        assert lost["error"] == "already_decided", (slug, loser, lost)
        said = re.search(
            r"already decided by (\S+) in realm (\S+) at (\S+) \(approve\)", lost["detail"]
        )
        assert said, lost
        assert said.groups()[:2] == (name, realm), (slug, loser, lost)
        assert datetime.fromisoformat(said.group(3)) == decided_at
    audited = "select actor_name from oversight_auditevent where verb = 'interrupt.approved' "
    audited += "and target_id = %s"
    assert b.sql(audited, (str(original),)) == [(f"{name}@a" if realm == "a" else name,)]
    # When b's operator won, a hears of it by b's `loopstacks/Decided`, after b's 200: a's
    # copy is settled, and audited in the same transaction, a moment later.
    settled = "select status, decided_realm from oversight_interrupt where id = %s"
    wait_for(lambda: a.sql(settled, (copy,))[0][0] == "decided", 30)
    assert a.sql(audited, (str(copy),)) == [(name if realm == "a" else f"{name}@b",)]
    # The decision moves b's run on, and its result returns up a's stack.
    done = "select state from loops_looprun where id = %s"
    assert wait_for(lambda: a.sql(done, (run_id,))[0][0] == "succeeded", 60)


def test_a_decision_in_the_peer_takes_the_copy_out_of_the_callers_inbox(federation):
    realms, tokens = federation
    a, b = realms["a"], realms["b"]
    answering(a, b, tokens)
    run_id = start(a, tokens["a"], "fed-human-direct", {})
    copy, original = copy_of(a, run_id)

    body = {"decision": "reject", "comment": "too much"}
    status, decided = b.api("POST", f"/api/v1/interrupts/{original}/decision", tokens["b"], body)

    assert status == 200, decided
    settled = "select status, decision, decided_by_name, decided_realm from oversight_interrupt "
    settled += "where id = %s"
    row = wait_for(lambda: (r := a.sql(settled, (copy,))[0])[0] == "decided" and r, 30)
    assert row == ("decided", "reject", "ada", "b")
    late = a.api("POST", f"/api/v1/interrupts/{copy}/decision", tokens["a"], body)
    assert late[0] == 409 and "already decided by ada in realm b" in late[1]["detail"], late
    status, cancelled = a.api("POST", f"/api/v1/runs/{run_id}/cancel", tokens["a"], {})
    assert status == 200, cancelled


def test_a_partition_pauses_the_callers_work_after_the_lease_and_resumes_it(federation):
    realms, tokens = federation
    a, b = realms["a"], realms["b"]
    grant(b, tokens["b"], "a", inbound=GRANT | {"lease_s": 5}, outbound=GRANT)
    run_id = start(a, tokens["a"], "fed-long-direct", {})
    called = called_in_b(a, b, run_id)
    wait_for(lambda: b.sql(ITERATIONS, (called,))[0][0] >= 3, 60)

    a.stop_web()  # b cannot reach a; a's worker still reaches b
    try:
        paused = wait_for(lambda: b.sql(CALLED, (run_id,))[0][1] == "paused", 60)
        assert paused
        assert b.sql(CALLED, (run_id,)) == [(called, "paused", "partition:a")]
        alert = "select title from oversight_alert where kind = %s"
        assert b.sql(alert, ("realm.partition",)) == [
            ("Realm a cannot be reached: the work it asked for is paused",)
        ]
        counted = b.sql(ITERATIONS, (called,))[0][0]
        wait_for(lambda: peer(b, tokens["b"], "a")["reachable"] is False, 5)
        frame = "select state from loops_looprun where root_id = %s and remote is not null"
        assert a.sql(frame, (run_id,)) == [("waiting",)]  # it ends only with b's answer
        threading.Event().wait(3)
        assert b.sql(ITERATIONS, (called,))[0][0] == counted  # nothing steps while paused
    finally:
        a.start_web()

    wait_for(lambda: b.sql(CALLED, (run_id,))[0][1] == "running", 60)
    wait_for(lambda: b.sql(ITERATIONS, (called,))[0][0] > counted + 2, 60)
    assert b.sql(alert, ("realm.partition_ended",)) == [
        ("Realm a is back: the work it asked for resumed",)
    ]
    total, distinct = b.sql(ITERATIONS, (called,))[0]
    assert total == distinct  # no iteration ran twice
    assert len(b.sql(CALLED, (run_id,))) == 1  # one run for one call: nothing duplicated
    status, _ = a.api("POST", f"/api/v1/runs/{run_id}/cancel", tokens["a"], {})
    assert status == 200
    wait_for(lambda: b.sql(CALLED, (run_id,))[0][1] == "cancelled", 30)


def test_the_caller_sees_an_unreachable_peer_and_its_frame_waits(federation):
    realms, tokens = federation
    a, b = realms["a"], realms["b"]
    run_id = start(a, tokens["a"], "fed-long-direct", {})
    called_in_b(a, b, run_id)

    b.stop_web()
    try:
        wait_for(lambda: peer(a, tokens["a"], "b")["reachable"] is False, 30)
        frame = "select state, remote->>'realm' from loops_looprun where root_id = %s "
        frame += "and remote is not null"
        assert a.sql(frame, (run_id,)) == [("waiting", "b")]
    finally:
        b.start_web()
    wait_for(lambda: peer(a, tokens["a"], "b")["reachable"] is True, 30)
    status, _ = a.api("POST", f"/api/v1/runs/{run_id}/cancel", tokens["a"], {})
    assert status == 200


def test_a_global_halt_halts_the_work_a_caused_and_not_the_peers_own(federation):
    realms, tokens = federation
    a, b = realms["a"], realms["b"]
    run_id = start(a, tokens["a"], "fed-long-direct", {})
    called_in_b(a, b, run_id)
    own = start(b, tokens["b"], "fed-count", {})

    status, halt = a.api("POST", "/api/v1/halts", tokens["a"], {"scope": "global", "reason": "all"})

    assert status == 201, halt
    wait_for(lambda: b.sql(CALLED, (run_id,))[0][1] == "halted", 30)
    state = "select state from loops_looprun where id = %s"
    assert b.sql(state, (own,)) == [("running",)] or b.sql(state, (own,)) == [("waiting",)]
    iterations = "select count(*) from loops_iteration where run_id = %s"
    before = b.sql(iterations, (own,))[0][0]
    wait_for(lambda: b.sql(iterations, (own,))[0][0] > before + 2, 30)  # b's own goes on

    # A global halt lifts with two different admins; then b's run resumes.
    status, _ = a.api("POST", f"/api/v1/halts/{halt['id']}/lift", tokens["a"], {"reason": "ok"})
    status, lifted = a.api(
        "POST", f"/api/v1/halts/{halt['id']}/lift", token_of(a, "abe"), {"reason": "ok too"}
    )
    assert status == 200, lifted
    wait_for(lambda: b.sql(CALLED, (run_id,))[0][1] == "running", 30)
    for realm, run in ((a, run_id), (b, own)):
        assert realm.api("POST", f"/api/v1/runs/{run}/cancel", tokens[realm.slug], {})[0] == 200


def test_a_halt_queued_while_the_peer_is_away_arrives_when_it_is_back(federation):
    realms, tokens = federation
    a, b = realms["a"], realms["b"]
    run_id = start(a, tokens["a"], "fed-long-direct", {})
    called_in_b(a, b, run_id)

    b.stop()  # web and worker: b is down
    try:
        scope = {"scope": f"run:{run_id}", "reason": "while b is away"}
        status, halt = a.api("POST", "/api/v1/halts", tokens["a"], scope)
        assert status == 201, halt
        queued = "select delivered_at is null from realms_outgoing "
        queued += "where method = 'loopstacks/Halt' and (params->'halt'->>'id')::int = %s"
        assert a.sql(queued, (halt["id"],)) == [(True,)]
    finally:
        b.start_web()
        b.start_worker()

    wait_for(lambda: b.sql(CALLED, (run_id,))[0][1] == "halted", 90)
    reason = "select reason from oversight_halt where lifted_at is null"
    assert b.sql(reason) == [("halted by realm a (ada): while b is away",)]
    status, _ = a.api("POST", f"/api/v1/halts/{halt['id']}/lift", tokens["a"], {"reason": "back"})
    assert status == 200
    wait_for(lambda: b.sql(CALLED, (run_id,))[0][1] == "running", 30)
    status, _ = a.api("POST", f"/api/v1/runs/{run_id}/cancel", tokens["a"], {})
    assert status == 200
