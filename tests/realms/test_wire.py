"""The wire between realms holds (issue 15, DESIGN.md section 8): a request that is not
signed by an approved peer's key, or is tampered with, replayed or past its expiry, is
refused and writes nothing; a stock a2a-sdk client with a client peer's token calls an
exported blueprint end to end; a peer that is down when called gets the call exactly once
when it is back; and nothing is heard from a realm whose pairing its admins did not approve."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types import GetTaskRequest, Message, Part, Role, SendMessageRequest, TaskState
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.json_format import MessageToDict
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realms.identity import b64url, fingerprint_of, raw_public
from realms.wire import COVERED, TAG
from realms.wire import Message as Signed
from tests.realms.conftest import RealmProcess, drop_database, start_realm
from tests.realms.test_federation import GRANT, admin_token, ended, grant, pair, start, wait_for


@pytest.fixture(scope="module")
def pair_ab():
    started: list[RealmProcess] = []
    try:
        started += [start_realm("a", 1), start_realm("b", 2)]
        realms = {r.slug: r for r in started}
        tokens = {slug: admin_token(r) for slug, r in realms.items()}
        pair(realms["a"], realms["b"], tokens)
        grant(realms["a"], tokens["a"], "b", inbound=GRANT, outbound=GRANT)
        grant(realms["b"], tokens["b"], "a", inbound=GRANT, outbound=GRANT)
        yield realms, tokens
    finally:
        for realm in reversed(started):
            realm.stop()
            drop_database(realm.database)


class _Key(HTTPSignatureKeyResolver):
    def __init__(self, key: Ed25519PrivateKey):
        self.key = key

    def resolve_private_key(self, key_id: str):
        return self.key


def key_of(realm: RealmProcess) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(realm.key_file.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def signed(key, url: str, body: bytes, *, created=None, lifetime: int = 60, nonce=None):
    """Headers signing `body` for POST `url`, as a realm would (realms.wire), with knobs."""
    created = created or datetime.now(UTC)
    message = Signed("POST", url, {"Content-Type": "application/json", "A2A-Version": "1.0"})
    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Key(key)).sign(
        message,
        key_id=fingerprint_of(raw_public(key.public_key())),
        created=created,
        expires=created + timedelta(seconds=lifetime),
        nonce=nonce or secrets.token_urlsafe(12),
        tag=TAG,
        covered_component_ids=COVERED,
        body=body,
    )
    return message.headers


def call(realm: RealmProcess, n: int, key: str) -> bytes:
    """A SendMessage asking `realm` for fed-micro, as realm a's frame would."""
    ext = {"origin": {"realm": "a", "run": 999, "root": 999}, "path": ["a"], "ttl": 7,
           "depth": 1, "max_depth": 8, "key": key}  # fmt: skip
    message = {"messageId": key, "role": "ROLE_USER",
               "parts": [{"data": {"blueprint": "fed-micro", "input": {"n": n}}}],
               "metadata": {"urn:loopstacks:federation:v1": ext}}  # fmt: skip
    return json.dumps(
        {"jsonrpc": "2.0", "id": key, "method": "SendMessage", "params": {"message": message}}
    ).encode()


def post(realm: RealmProcess, body: bytes, headers: dict) -> tuple[int, dict]:
    answer = httpx.post(f"{realm.url}/a2a", content=body, headers=headers, trust_env=False)
    return answer.status_code, answer.json()


def written(realm: RealmProcess) -> tuple[int, int]:
    return (
        realm.sql("select count(*) from realms_incoming")[0][0],
        realm.sql("select count(*) from loops_looprun")[0][0],
    )


def test_bad_signatures_are_refused_and_write_nothing(pair_ab):
    realms, _ = pair_ab
    a, b = realms["a"], realms["b"]
    url, key = f"{b.url}/a2a", key_of(a)
    before = written(b)
    body = call(b, 1, "k-bad")
    cases = {
        "unsigned": {"Content-Type": "application/json"},
        "tampered": signed(key, url, call(b, 2, "k-bad")),
        "expired": signed(key, url, body, created=datetime.now(UTC) - timedelta(seconds=120)),
        "too long a life": signed(key, url, body, lifetime=600),
        "unknown key": signed(Ed25519PrivateKey.generate(), url, body),
        "another target": signed(key, f"{a.url}/a2a", body),
    }
    for name, headers in cases.items():
        status, answer = post(b, body, headers)
        assert status == 401, (name, status, answer)
        assert answer["jsonrpc"] == "2.0" and answer["error"]["message"], name
    status, answer = post(b, b"{not json", signed(key, url, b"{not json"))
    assert status == 400 and answer["error"]["code"] == -32700
    assert written(b) == before


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
METHODS = st.sampled_from(
    ["SendMessage", "GetTask", "CancelTask", "CreateTaskPushNotificationConfig",
     "loopstacks/Bid", "loopstacks/Pair", "loopstacks/PairApproved", "loopstacks/Halt",
     "loopstacks/Lift", "loopstacks/Interrupt", "loopstacks/Decided", "loopstacks/Decide",
     "ListTasks", "nope"]
)  # fmt: skip


def test_fuzzed_json_rpc_gets_json_rpc_errors_and_writes_nothing(pair_ab):
    """Signed by an approved peer, or not signed at all: whatever the method and params, the
    answer is a JSON-RPC object (an error for the malformed), never a 5xx, and nothing is
    written (issue 15: the A2A endpoint under the fuzzer too)."""
    realms, _ = pair_ab
    a, b = realms["a"], realms["b"]
    url, key = f"{b.url}/a2a", key_of(a)
    before = written(b)

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(method=METHODS, params=JSON, sign=st.booleans())
    def one(method, params, sign):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        headers = signed(key, url, body) if sign else {"Content-Type": "application/json"}
        status, answer = post(b, body, headers)
        assert status < 500 and answer["jsonrpc"] == "2.0", (status, answer)
        assert "error" in answer or "result" in answer
        if not sign:  # refused before anything is read, unless it is not JSON-RPC at all
            assert status == 401 or answer["error"]["code"] in (-32700, -32600)

    one()
    assert written(b) == before


def test_fuzzed_federation_metadata_and_pushes_never_fail_the_peer(pair_ab):
    """A call whose federation metadata has any shape, and a push of any body, signed by an
    approved peer: never a 5xx; a call of a blueprint b does not export starts no run."""
    realms, _ = pair_ab
    a, b = realms["a"], realms["b"]
    key = key_of(a)
    runs = written(b)[1]

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(ext=JSON, push=JSON)
    def one(ext, push):
        message = {"messageId": secrets.token_hex(6), "role": "ROLE_USER",
                   "parts": [{"data": {"blueprint": "fed-none", "input": {}}}],
                   "metadata": {"urn:loopstacks:federation:v1": ext}}  # fmt: skip
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                           "params": {"message": message}}).encode()  # fmt: skip
        status, answer = post(b, body, signed(key, f"{b.url}/a2a", body))
        assert status < 500 and "jsonrpc" in answer, (status, answer)
        raw = json.dumps({"task": push}).encode()
        pushed = httpx.post(f"{b.url}/a2a/push", content=raw, trust_env=False,
                            headers=signed(key, f"{b.url}/a2a/push", raw))  # fmt: skip
        assert pushed.status_code < 500, pushed.text

    one()
    assert written(b)[1] == runs


def test_a_replayed_request_is_refused_and_starts_nothing_twice(pair_ab):
    realms, _ = pair_ab
    a, b = realms["a"], realms["b"]
    body = call(b, 5, f"k-replay-{secrets.token_hex(4)}")
    headers = signed(key_of(a), f"{b.url}/a2a", body)
    incoming, runs = written(b)

    first = post(b, body, headers)
    again = post(b, body, headers)

    started = first[1]["result"]["task"]["status"]["state"]  # done already, on a quick worker
    assert first[0] == 200 and started in ("TASK_STATE_WORKING", "TASK_STATE_COMPLETED")
    assert again[0] == 401 and "replay" in again[1]["error"]["message"]
    assert written(b) == (incoming + 1, runs + 1)


def test_a_stock_a2a_client_with_a_client_token_calls_an_exported_blueprint(pair_ab):
    realms, tokens = pair_ab
    b = realms["b"]
    out = b.manage("realm", "client", "tool", "--user", "ada")
    token = out.strip().splitlines()[-1]
    grant(b, tokens["b"], "tool", inbound={**GRANT, "blueprints": "fed-micro"})

    async def use() -> dict:
        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, trust_env=False)
        client = await create_client(b.url, ClientConfig(streaming=False, httpx_client=http))
        request = SendMessageRequest(
            message=Message(message_id="m-1", role=Role.ROLE_USER, parts=[Part()])
        )
        request.message.parts[0].data.struct_value.update({"n": 5})
        request.message.metadata.update({"skill": "fed-micro"})
        task = None
        async for event in client.send_message(request):
            task = event.task
        assert task is not None
        for _ in range(100):
            if task.status.state == TaskState.TASK_STATE_COMPLETED:
                break
            await asyncio.sleep(0.2)
            task = await client.get_task(GetTaskRequest(id=task.id))
        await client.close()
        await http.aclose()
        return MessageToDict(task)

    task = asyncio.run(use())

    assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
    assert task["artifacts"][0]["parts"][0]["data"] == {"n": 6.0, "realm": "b"}
    [(origin,)] = b.sql("select origin from loops_looprun where origin->>'realm' = 'tool'")
    assert origin["path"] == ["b"]


def test_a_peer_down_when_called_gets_the_call_exactly_once_when_back(pair_ab):
    """b's web process and worker are stopped; a calls; a's outbox retries with backoff
    until b's breaker opens (an alert says so) and holds the message; b comes back: the
    breaker's trial delivers it, once: one run in b, and a's stack has its result."""
    realms, tokens = pair_ab
    a, b = realms["a"], realms["b"]
    b.stop()
    run_id = start(a, tokens["a"], "fed-direct", {"n": 10})
    breaker = "select state from oversight_circuitbreaker where name = 'peer-b'"
    wait_for(lambda: a.sql(breaker) == [("open",)], 60)
    assert a.sql("select count(*) from oversight_alert where kind = 'breaker.opened'")[0][0] >= 1
    b.start_web()
    b.start_worker()

    outcome = ended(a, run_id, timeout=90)

    assert outcome["state"] == "succeeded", outcome
    assert outcome["result"] == {"b:fed-micro": {"n": 11, "realm": "b"}}
    [(frame,)] = a.sql("select id from loops_looprun where parent_id = %s", (run_id,))
    started_in_b = b.sql(
        "select count(*) from loops_looprun where (origin->>'run')::int = %s", (frame,)
    )
    assert started_in_b == [(1,)]
    assert a.sql(breaker) == [("closed",)]


def test_a_peer_killed_mid_call_and_a_lost_push_lose_nothing(pair_ab):
    """b's worker is SIGKILLed while b runs a's call, and a's web process goes away, so b's
    pushes cannot arrive: b's reaper takes the run over once a new worker is up, and a's beat
    asks b for the task (GetTask) and ends the frame without any push. One run in b."""
    realms, tokens = pair_ab
    a, b = realms["a"], realms["b"]
    run_id = start(a, tokens["a"], "fed-slow-direct", {})
    [(frame,)] = wait_for(
        lambda: a.sql("select id from loops_looprun where parent_id = %s", (run_id,))
    )
    in_b = "select state from loops_looprun where (origin->>'run')::int = %s"
    wait_for(lambda: b.sql(in_b, (frame,)) == [("running",)], 30)
    assert b.worker is not None
    b.worker.kill()  # mid-call: the sleeper takes two seconds
    a.stop_web()
    try:
        b.start_worker()

        outcome = ended(a, run_id, timeout=90)

        assert outcome["state"] == "succeeded", outcome
        assert outcome["result"] == {"b:fed-slow": {"slept": 2, "realm": "b"}}
        assert b.sql(in_b, (frame,)) == [("succeeded",)]  # one run, once
        pushed = b.sql(
            "select delivered_at from realms_outgoing where method = 'push' "
            "and run_id = (select id from loops_looprun where (origin->>'run')::int = %s)",
            (frame,),
        )
        assert pushed == [(None,)]  # the push never arrived: GetTask ended the frame
    finally:
        a.start_web()


def test_a_suspended_peer_is_refused_at_once_and_heard_again_once_approved(pair_ab):
    realms, tokens = pair_ab
    a, b = realms["a"], realms["b"]
    url, key = f"{b.url}/a2a", key_of(a)
    status, peer = b.api("POST", "/api/v1/realms/a/suspend", tokens["b"], {"reason": "drill"})
    assert status == 200 and peer["status"] == "suspended"
    try:
        before = written(b)
        body = call(b, 1, f"k-suspended-{secrets.token_hex(4)}")
        status, answer = post(b, body, signed(key, url, body))
        assert status == 403 and "suspended" in answer["error"]["message"]
        assert written(b) == before
        [(note,)] = b.sql("select note from oversight_auditevent where verb = 'realm.suspended'")
        assert note == "drill"
    finally:
        status, peer = b.api("POST", "/api/v1/realms/a/approve", tokens["b"])
    assert status == 200 and peer["status"] == "approved"
    body = call(b, 2, f"k-back-{secrets.token_hex(4)}")
    assert post(b, body, signed(key, url, body))[0] == 200


def test_nothing_is_heard_from_a_realm_its_admins_did_not_approve(pair_ab):
    """c asks b to pair; b's admins do nothing: c's signed calls are refused (403), and b's
    record shows the request pending with c's fingerprint."""
    realms, tokens = pair_ab
    b = realms["b"]
    c = start_realm("c", 3)
    try:
        token_c = admin_token(c)
        fingerprint = b.api("GET", "/api/v1/realms", tokens["b"])[1]["fingerprint"]
        status, _ = c.api(
            "POST", "/api/v1/realms", token_c, {"url": b.url, "fingerprint": fingerprint}
        )
        assert status == 201
        asked = wait_for(
            lambda: next(
                (
                    p
                    for p in b.api("GET", "/api/v1/realms", tokens["b"])[1]["peers"]
                    if p["slug"] == "c"
                ),
                None,
            )
        )
        key = key_of(c)
        assert asked["status"] == "pending" and asked["fingerprint"] == fingerprint_of(
            raw_public(key.public_key())
        )
        before = written(b)
        body = call(b, 1, "k-unapproved")
        status, answer = post(b, body, signed(key, f"{b.url}/a2a", body))
        assert status == 403 and "pending" in answer["error"]["message"]
        assert written(b) == before
        # And a wrong fingerprint is refused before anything is asked.
        wrong = "SHA256:" + b64url(bytes(32)).replace("-", "+").replace("_", "/")[:43]
        status, answer = c.api(
            "POST", "/api/v1/realms", token_c, {"url": b.url, "fingerprint": wrong}
        )
        assert status == 400 and answer["error"] == "fingerprint_mismatch"
    finally:
        c.stop()
        drop_database(c.database)
