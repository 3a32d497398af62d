from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import pytest_asyncio
import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings

from common import push
from common.push import CONSOLE_GROUP, INBOX_GROUP, domain_group, push_html
from common.redis import redis_client
from console import consumers
from console.asgi import application
from tests.conftest import wait_for, with_role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _cookie(client, user) -> bytes:
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


@pytest.fixture
def session_cookie(client, django_user_model) -> bytes:
    user = django_user_model.objects.create_user("operator", password="a long passphrase")
    return _cookie(client, with_role(user))


def _socket(*headers: tuple[bytes, bytes], path: str = "/ws/console/") -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[(b"host", b"localhost"), *headers])


async def _receive_matching(communicator: WebsocketCommunicator, marker: str) -> str:
    """The next message containing marker; liveness beats of the test worker may come first."""
    async with asyncio.timeout(10):
        while marker not in (message := await communicator.receive_from(timeout=10)):
            pass
    return message


async def test_it_delivers_a_push_from_sync_code_to_a_signed_in_user(session_cookie):
    communicator = _socket((b"cookie", session_cookie), (b"origin", b"http://localhost"))
    connected, _ = await communicator.connect()
    assert connected

    fragment = '<div id="probe-1" hx-swap-oob="true">pushed</div>'
    await sync_to_async(push_html)(CONSOLE_GROUP, fragment)

    assert await _receive_matching(communicator, 'id="probe-1"') == fragment
    await communicator.disconnect()


async def test_it_refuses_an_anonymous_socket():
    communicator = _socket((b"origin", b"http://localhost"))

    connected, _ = await communicator.connect()

    assert connected is False


async def test_it_refuses_a_signed_in_user_without_a_role(client, django_user_model):
    cookie = await sync_to_async(_cookie)(
        client, await sync_to_async(django_user_model.objects.create_user)("nobody")
    )
    communicator = _socket((b"cookie", cookie), (b"origin", b"http://localhost"))

    connected, _ = await communicator.connect()

    assert connected is False


async def test_it_refuses_a_socket_opened_from_another_site(session_cookie):
    communicator = _socket((b"cookie", session_cookie), (b"origin", b"https://evil.example"))

    connected, _ = await communicator.connect()

    assert connected is False


async def test_a_page_gets_the_pushes_of_its_topics_and_not_of_others(session_cookie):
    """A domain's stack goes to the pages that show that domain, not to every console."""
    signed_in = ((b"cookie", session_cookie), (b"origin", b"http://localhost"))
    domain_7 = _socket(*signed_in, path="/ws/console/?topics=domain.7,inbox")
    inbox_only = _socket(*signed_in, path="/ws/console/?topics=inbox")
    for socket in (domain_7, inbox_only):
        assert (await socket.connect())[0]

    await sync_to_async(push_html)(domain_group(7), '<p id="stack-7">7</p>')
    await sync_to_async(push_html)(INBOX_GROUP, '<p id="inbox-probe">i</p>')
    await sync_to_async(push_html)(CONSOLE_GROUP, '<p id="everyone">e</p>')

    received = {}
    for name, socket in (("domain_7", domain_7), ("inbox_only", inbox_only)):
        messages = []
        async with asyncio.timeout(10):
            while 'id="everyone"' not in (message := await socket.receive_from(timeout=10)):
                messages.append(message)  # pushes arrive in the order they were sent
        received[name] = " ".join(messages)
    assert 'id="stack-7"' in received["domain_7"] and 'id="inbox-probe"' in received["domain_7"]
    assert 'id="inbox-probe"' in received["inbox_only"]
    assert 'id="stack-7"' not in received["inbox_only"]
    await inbox_only.disconnect()
    await domain_7.disconnect()


@pytest.mark.parametrize(
    "query",
    ["topics=everything", "topics=domain.lab", "topics=domain.1;drop", "topics=" + "inbox," * 9],
)
async def test_it_refuses_a_topic_that_is_not_one(session_cookie, query):
    socket = _socket(
        (b"cookie", session_cookie), (b"origin", b"http://localhost"), path=f"/ws/console/?{query}"
    )

    connected, _ = await socket.connect()

    assert connected is False


async def _pushes_until(socket: WebsocketCommunicator, marker: str) -> list[str]:
    """Every message the socket receives up to and including the one containing marker,
    but the workers' liveness beats, which every socket gets (CONSOLE_GROUP) when a worker
    of the session beats meanwhile."""
    messages: list[str] = []
    async with asyncio.timeout(10):
        while marker not in (message := await socket.receive_from(timeout=10)):
            if 'id="workers"' not in message:
                messages.append(message)
    return [*messages, message]


async def _pushes_for(socket: WebsocketCommunicator, seconds: float) -> list[str]:
    """Every message the socket receives in the next `seconds`."""
    messages: list[str] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                messages.append(await socket.receive_from(timeout=seconds))
    return messages


async def _numbered(group: str, *seqs: int) -> None:
    """Pushes of a group numbered as common.push.push_html numbers them, through the real
    channel layer, each fragment named by its number."""
    layer = get_channel_layer()
    for seq in seqs:
        html = f'<p id="n-{seq}" hx-swap-oob="true">{seq}</p>'
        await layer.group_send(
            group, {"type": "html.push", "html": html, "group": group, "seq": seq}
        )


@pytest_asyncio.fixture
async def domain_socket(session_cookie):
    """A signed-in page of a domain no worker pushes to: only this test's pushes arrive."""
    socket = _socket(
        (b"cookie", session_cookie),
        (b"origin", b"http://localhost"),
        path="/ws/console/?topics=domain.990001",
    )
    assert (await socket.connect())[0]
    yield socket
    await socket.disconnect()


async def test_it_asks_the_page_to_resync_when_a_push_was_missed(domain_socket):
    """3 never comes: once the grace for a reordering is over, the page is told to resync."""
    await _numbered(domain_group(990001), 1, 2, 4)

    received = await _pushes_until(domain_socket, 'id="ws-resync"')

    assert received[:3] == [f'<p id="n-{n}" hx-swap-oob="true">{n}</p>' for n in (1, 2, 4)]
    assert 'hx-swap-oob="true"' in received[3]
    assert 'data-gap="domain.990001:2-&gt;4"' in received[3]


async def test_pushes_published_in_another_order_than_numbered_ask_for_no_resync(domain_socket):
    """Two workers each number (INCR) and publish a push: 3 may arrive after 4."""
    await _numbered(domain_group(990001), 1, 2, 4, 3, 5)

    received = await _pushes_until(domain_socket, 'id="n-5"')
    later = await _pushes_for(domain_socket, consumers.REORDER_GRACE_SECONDS + 0.5)

    assert [m.split('"')[1] for m in received] == ["n-1", "n-2", "n-4", "n-3", "n-5"]
    assert not [m for m in later if 'id="ws-resync"' in m]


async def test_a_gap_too_wide_for_a_reordering_asks_for_a_resync_at_once(domain_socket):
    wide = 2 + consumers.MAX_REORDERED + 1
    await _numbered(domain_group(990001), 1, 2, wide)

    received = await _pushes_until(domain_socket, f'id="n-{wide}"')

    assert [m.split('"')[1] for m in received] == ["n-1", "n-2", "ws-resync", f"n-{wide}"]


async def test_it_asks_the_page_to_resync_when_the_counter_restarted(domain_socket):
    """Redis came back without the counter: what was pushed around its restart is unknown."""
    await _numbered(domain_group(990001), 7, 8, 1, 2)

    received = await _pushes_until(domain_socket, 'id="n-2"')

    assert [m.split('"')[1] for m in received] == ["n-7", "n-8", "ws-resync", "n-1", "n-2"]


async def test_consecutive_pushes_ask_for_no_resync(domain_socket):
    """The first push sets the baseline, whatever its number (the page was just loaded)."""
    await _numbered(domain_group(990001), 41, 42, 43)

    received = await _pushes_until(domain_socket, 'id="n-43"')

    assert [m.split('"')[1] for m in received] == ["n-41", "n-42", "n-43"]


async def test_push_html_numbers_each_groups_pushes(domain_socket):
    group = domain_group(990001)
    for n in (1, 2, 3):
        await sync_to_async(push_html)(group, f'<p id="p-{n}">{n}</p>')

    received = await _pushes_until(domain_socket, 'id="p-3"')

    assert received == [f'<p id="p-{n}">{n}</p>' for n in (1, 2, 3)]  # and no resync
    seq = await sync_to_async(redis_client().get)(f"push-seq:{group}")
    assert int(seq) >= 3


async def test_push_html_sends_unnumbered_when_redis_cannot_number_it(domain_socket, monkeypatch):
    """And takes its number once Redis answers, so the next push shows the gap."""

    class Refusing:
        def incr(self, key: str) -> int:
            raise redis.ConnectionError("refused")

    group = domain_group(990001)
    await sync_to_async(push_html)(group, '<p id="before">b</p>')  # the baseline
    monkeypatch.setattr("common.redis.redis_client", lambda: Refusing())
    await sync_to_async(push_html)(group, '<p id="unnumbered">u</p>')
    monkeypatch.undo()  # Redis answers again
    await sync_to_async(wait_for)(lambda: not push._skipped, 10)
    await sync_to_async(push_html)(group, '<p id="after">a</p>')

    received = await _pushes_until(domain_socket, 'id="ws-resync"')

    assert [m.split('"')[1] for m in received] == ["before", "unnumbered", "after", "ws-resync"]


# --- The coalescing window adapts to a group's subscribers (common.push.coalesce_window) ---


def latest_state(key: str) -> str:
    """A state pushed coalesced: its number at the moment of rendering (rendered here or by
    the worker, for the trailing push)."""
    return f'<p id="state" hx-swap-oob="true" data-seq="{int(redis_client().get(key) or 0)}"></p>'


async def _sockets(cookie: bytes, group: str, n: int) -> list[WebsocketCommunicator]:
    """n signed-in sockets of the group, opened at once (their counts race to Redis)."""
    path = f"/ws/console/?topics={group}"
    sockets = [
        _socket((b"cookie", cookie), (b"origin", b"http://localhost"), path=path) for _ in range(n)
    ]
    assert all(c for c, _ in await asyncio.gather(*(s.connect() for s in sockets)))
    return sockets


def _window(group: str) -> float:
    push._subscribers.clear()  # what this process read last is trusted for a second
    return push.coalesce_window(group)


async def test_the_window_is_short_for_one_console_and_longer_for_many(session_cookie, monkeypatch):
    """Each socket's Daphne process counts the group's sockets in Redis on connect and
    disconnect; the window follows the busiest process's count, between the bounds."""
    monkeypatch.setattr(push, "FRAMES_PER_SECOND", 100)  # 6 sockets: 0.06 s, not 200
    group = domain_group(990002)
    assert await sync_to_async(_window)(group) == push.COALESCE_MIN_SECONDS  # nobody

    one = await _sockets(session_cookie, group, 1)
    assert await sync_to_async(_window)(group) == push.COALESCE_MIN_SECONDS
    many = one + await _sockets(session_cookie, group, 5)
    assert await sync_to_async(_window)(group) == pytest.approx(0.06)
    more = await _sockets(session_cookie, group, 30)
    assert await sync_to_async(_window)(group) == push.COALESCE_MAX_SECONDS

    for socket in [*more, *many[1:]]:
        await socket.disconnect()
    assert await sync_to_async(_window)(group) == push.COALESCE_MIN_SECONDS
    await one[0].disconnect()
    assert not await sync_to_async(redis_client().hlen)(push.subscribers_key(group))


async def test_a_process_that_stopped_without_a_word_is_not_counted(monkeypatch):
    """A Daphne killed (or stopped before its sockets closed) leaves its field, whose time
    passes: only the live processes' sockets count."""
    group = domain_group(990003)
    key = push.subscribers_key(group)
    client = redis_client()
    await sync_to_async(client.hset)(key, "gone:1", f"500 {time.time() - 1:.0f}")
    await sync_to_async(client.hset)(key, "here:2", push.subscribers_field(150))
    try:
        assert await sync_to_async(_window)(group) == pytest.approx(150 / push.FRAMES_PER_SECOND)
    finally:
        await sync_to_async(client.delete)(key)


async def test_many_subscribers_get_the_latest_state_last(
    session_cookie, celery_worker, monkeypatch
):
    """A burst of changes to a group with many sockets: pushed coalesced in the longer
    window, the first at once, the latest state in the last push, at every socket (the
    trailing push rendered by the worker)."""
    from django.db import transaction

    monkeypatch.setattr(push, "FRAMES_PER_SECOND", 40)  # 8 sockets: a 0.2 s window
    group, key = domain_group(990004), f"test-state:{time.time_ns()}"
    sockets = await _sockets(session_cookie, group, 8)
    assert await sync_to_async(_window)(group) == push.COALESCE_MAX_SECONDS

    def burst() -> None:
        for _ in range(20):
            with transaction.atomic():
                redis_client().incr(key)
                push.push_coalesced_on_commit(
                    group, key, "tests.console.test_consumer.latest_state", key
                )

    await sync_to_async(burst)()
    for socket in sockets:
        received = await _pushes_until(socket, 'data-seq="20"')
        seqs = [int(m.split('data-seq="')[1].split('"')[0]) for m in received if "data-seq" in m]
        assert seqs[-1] == 20 and seqs == sorted(seqs)
        assert len(seqs) < 20  # coalesced: not a push per change
        await socket.disconnect()


async def test_the_sockets_of_a_group_share_one_subscription_until_the_last_leaves(
    session_cookie,
):
    """console.consumers.Fanout: one subscription per group and process; a push reaches
    every socket of the group; the subscription goes with the group's last socket."""
    from console.consumers import FANOUT

    group = domain_group(990005)
    sockets = await _sockets(session_cookie, group, 3)
    assert len([g for g in FANOUT.listeners if g == group]) == 1
    await sync_to_async(push_html)(group, '<p id="shared-1">1</p>')
    for socket in sockets:
        assert (await _pushes_until(socket, 'id="shared-1"'))[-1] == '<p id="shared-1">1</p>'

    for socket in sockets[:2]:
        await socket.disconnect()
    await sync_to_async(push_html)(group, '<p id="shared-2">2</p>')
    assert (await _pushes_until(sockets[2], 'id="shared-2"'))[-1] == '<p id="shared-2">2</p>'
    await sockets[2].disconnect()
    assert group not in FANOUT.listeners and group not in FANOUT.members
