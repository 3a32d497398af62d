"""A halt follows the work (DESIGN.md H8, issue 16's first rule): a halt in realm a of a run
whose stack crosses into b and c halts what it caused there, on a's behalf, audited with a's
realm, person and reason; no step starts in b or c after their own halts commit; a's lift
lifts what its halt caused, and a peer's own halt stays its own. A cancel crosses too."""

from __future__ import annotations

import time

from tests.realms.test_federation import federation, start, wait_for

STARTS = ["iteration.broadcast", "bid.received", "selection.made", "agent.call.requested"]
ACTIVE = "select id, reason, created_at from oversight_halt where lifted_at is null order by id"
CALLED = "select state from loops_looprun where origin is not null and parent_id is null"
LATE = "select count(*) from loops_event where type = any(%s) and ts > %s"

__all__ = ["federation"]


def test_a_halt_follows_the_work_into_every_realm_and_so_does_its_lift(federation):
    realms, tokens = federation
    a, b, c = realms["a"], realms["b"], realms["c"]
    run_id = start(a, tokens["a"], "fed-long-main", {})
    counted = "select count(*) from loops_iteration i join loops_looprun r on r.id = i.run_id "
    counted += "where r.origin is not null"
    wait_for(lambda: c.sql(counted)[0][0] >= 3, 60)

    status, halt = a.api(
        "POST", "/api/v1/halts", tokens["a"], {"scope": f"run:{run_id}", "reason": "drill across"}
    )

    assert status == 201, halt
    [(b_halt, b_reason, b_at)] = wait_for(lambda: b.sql(ACTIVE), 30)
    [(c_halt, c_reason, c_at)] = wait_for(lambda: c.sql(ACTIVE), 30)
    assert b_reason == "halted by realm a (ada): drill across"
    assert c_reason.startswith("halted by realm b (system): ")  # onward, on b's behalf
    assert b.sql(CALLED) == [("halted",)] and c.sql(CALLED) == [("halted",)]
    time.sleep(2)  # steps and calls that were in flight come and go meanwhile
    assert b.sql(LATE, (STARTS, b_at)) == [(0,)] and c.sql(LATE, (STARTS, c_at)) == [(0,)]
    audited = "select actor_name, note from oversight_auditevent where verb = 'halt.engaged'"
    assert b.sql(audited) == [("system", b_reason)]

    # b's own halt of its domain: a's lift does not lift it.
    status, own = b.api(
        "POST", "/api/v1/halts", tokens["b"], {"scope": "domain:fed", "reason": "b's own"}
    )
    assert status == 201, own
    status, _ = a.api("POST", f"/api/v1/halts/{halt['id']}/lift", tokens["a"], {"reason": "over"})
    assert status == 200
    lifted = "select lifted_at is not null, lift_reason from oversight_halt where id = %s"
    wait_for(lambda: b.sql(lifted, (b_halt,))[0][0], 30)
    assert b.sql(lifted, (b_halt,)) == [(True, "lifted by realm a (ada): over")]
    assert b.sql(lifted, (own["id"],))[0][0] is False
    assert b.sql(CALLED) == [("halted",)] and c.sql(CALLED) == [("halted",)]

    # b lifts its own: the work resumes in b, and its frame's lift reaches c.
    status, _ = b.api("POST", f"/api/v1/halts/{own['id']}/lift", tokens["b"], {"reason": "ok"})
    assert status == 200
    wait_for(lambda: c.sql(lifted, (c_halt,))[0][0], 30)
    before = c.sql(counted)[0][0]
    wait_for(lambda: c.sql(counted)[0][0] > before + 2, 30)
    assert a.sql("select state from loops_looprun where id = %s", (run_id,)) == [("waiting",)]

    # A cancel in a cancels what its frames started, onward.
    status, _ = a.api("POST", f"/api/v1/runs/{run_id}/cancel", tokens["a"], {})
    assert status == 200
    wait_for(lambda: b.sql(CALLED) == [("cancelled",)] and c.sql(CALLED) == [("cancelled",)], 30)
    detail = "select exit_detail from loops_looprun where origin is not null and parent_id is null"
    assert b.sql(detail) == [("cancelled by realm a, which asked for it",)]
