from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from console.asgi import application
from console.push import CONSOLE_GROUP, INBOX_GROUP, domain_group, push_html
from tests.conftest import with_role

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
