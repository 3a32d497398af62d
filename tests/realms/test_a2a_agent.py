"""Any A2A agent can stand in a broadcast (issue 15, DESIGN.md section 8): realm a's
fed-ask broadcasts to an agent with adapter "a2a", pointed at another console's A2A endpoint
with a client peer's token, as it would be at any A2A server. It bids its declared
confidence, and its answer is the broadcast's result."""

from __future__ import annotations

from tests.realms.conftest import drop_database, start_realm
from tests.realms.test_federation import GRANT, admin_token, ended, grant, start


def test_a_broadcast_uses_any_a2a_agent_as_a_remote_agent():
    b = start_realm("b", 2)
    started = [b]
    try:
        token_b = admin_token(b)
        client_token = (
            b.manage("realm", "client", "asker", "--user", "ada").strip().splitlines()[-1]
        )
        grant(b, token_b, "asker", inbound={**GRANT, "blueprints": "fed-micro"})
        a = start_realm(
            "a", 1, more_env={"FED_A2A_URL": f"{b.url}/a2a", "FED_A2A_TOKEN": client_token}
        )
        started.append(a)
        run_id = start(a, admin_token(a), "fed-ask", {"n": 20})

        outcome = ended(a, run_id)

        assert outcome["state"] == "succeeded", outcome
        assert outcome["result"] == {"n": 21, "realm": "b"}
        [(confidence, selected)] = a.sql(
            "select b.confidence, b.selected from loops_bid b join loops_agent g "
            "on g.id = b.agent_id where g.name = 'any-a2a'"
        )
        assert confidence == 0.8 and selected
        [(origin,)] = b.sql("select origin from loops_looprun where origin is not null")
        assert origin["realm"] == "asker"
    finally:
        for realm in reversed(started):
            realm.stop()
            drop_database(realm.database)
