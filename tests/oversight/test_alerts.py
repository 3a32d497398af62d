"""The alerts outbox and its notifiers, on the real services: webhooks to a real HTTP server on
the loopback, mail through Django's test backend, pushes through the real Redis channel layer
and delivery by a real Celery worker."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections, transaction
from django.test import override_settings
from django.utils import timezone

from console.asgi import application
from console.supervisor import free_port
from oversight.models import Alert, Notification
from oversight.notifiers.webhook import webhook_text
from oversight.services.alerts import (
    alert_raise,
    notification_backoff,
    notification_deliver,
    notifications_deliver_due,
)
from tests.conftest import ROOT, wait_for, with_role

Status = Notification.Status
SECRET = "webhook-test-secret"

# The session's Celery worker reads ALERT_WEBHOOKS from its environment when it starts, which
# is after every test module has been imported: so the worker of the end-to-end test knows the
# webhook "e2e" on a port chosen now. This process's settings are loaded already and keep
# no webhooks; tests configure theirs with override_settings.
E2E_PORT = free_port()
os.environ["ALERT_WEBHOOKS"] = f"e2e=http://127.0.0.1:{E2E_PORT}/hook"
os.environ["ALERT_WEBHOOK_SECRET"] = SECRET


class Receiver:
    """A real HTTP server on 127.0.0.1 that records each call and answers with `status`."""

    def __init__(self, *, port: int = 0, status: int = 200, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay
        self.calls: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    with override_settings(ALERT_WEBHOOKS={"test": server.url}, ALERT_WEBHOOK_SECRET=SECRET):
        yield server
    server.close()


def _raise(**kwargs) -> Alert:
    """An alert raised as the services do it: inside the caller's transaction."""
    with transaction.atomic():
        return alert_raise(**{"kind": "breaker.opened", "title": "Breaker opened", **kwargs})


def _notification(alert: Alert, channel: str) -> Notification:
    return Notification.objects.get(alert=alert, channel=channel)


def _deliver(notification: Notification, now=None) -> Notification:
    notification_deliver(notification_id=notification.pk, now=now)
    notification.refresh_from_db()
    return notification


def _verified(headers: dict[str, str], body: bytes, secret: str = SECRET) -> bool:
    signed = headers["x-console-timestamp"].encode() + b"." + body
    expected = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-console-signature"], expected)


# --- alert_raise --------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_writes_one_notification_per_channel(
    django_user_model, django_capture_on_commit_callbacks
):
    admin = with_role(django_user_model.objects.create_user("ada", "ada@example.org"), "admin")
    with (
        override_settings(
            ALERT_WEBHOOKS={"ops": "http://127.0.0.1:9/a", "pager": "http://127.0.0.1:9/b"},
            ALERT_WEBHOOK_SECRET=SECRET,
        ),
        django_capture_on_commit_callbacks() as callbacks,
    ):
        alert = _raise(audience=Alert.Audience.ADMINS, target=admin, data={"n": 5})

    channels = set(alert.notifications.values_list("channel", flat=True))
    assert channels == {"console", "email", "webhook:ops", "webhook:pager"}
    assert set(alert.notifications.values_list("status", flat=True)) == {Status.PENDING}
    assert len(callbacks) == 4  # one enqueue each, after commit
    assert (alert.target_type, alert.target_id, alert.data) == ("user", str(admin.pk), {"n": 5})


@pytest.mark.django_db
def test_it_writes_no_email_notification_when_nobody_has_an_address(django_user_model):
    with_role(django_user_model.objects.create_user("ada"), "admin")

    alert = _raise(audience=Alert.Audience.ADMINS)

    assert list(alert.notifications.values_list("channel", flat=True)) == ["console"]


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_raise_outside_a_transaction():
    with pytest.raises(AssertionError, match="needs a transaction"):
        alert_raise(kind="breaker.opened", title="Breaker opened")

    assert not Alert.objects.exists()


# --- webhooks -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_delivers_a_signed_webhook_with_a_slack_text(receiver):
    alert = _raise(
        level=Alert.Level.CRITICAL,
        title="Breaker lab-agent opened",
        body="5 failures\nin a row",
        data={"failures": 5},
    )

    notification = _deliver(_notification(alert, "webhook:test"))

    assert (notification.status, notification.attempts) == (Status.SENT, 1)
    assert notification.sent_at is not None and notification.last_error == ""
    [(headers, body)] = receiver.calls
    assert headers["content-type"] == "application/json"
    assert abs(int(headers["x-console-timestamp"]) - time.time()) < 10
    assert _verified(headers, body)
    assert not _verified(headers, body, secret="another secret")
    assert not _verified(headers, body + b" ")
    payload = json.loads(body)
    assert payload["text"] == "[CRITICAL] Breaker lab-agent opened — 5 failures in a row"
    assert payload["alert"] == {
        "id": alert.pk,
        "kind": "breaker.opened",
        "level": "critical",
        "title": "Breaker lab-agent opened",
        "body": "5 failures\nin a row",
        "target": None,
        "data": {"failures": 5},
        "created_at": alert.created_at.isoformat(),
    }


def test_it_escapes_the_text_as_slack_wants_it():
    alert = Alert(level="info", title="a <b> & c", body="")

    assert webhook_text(alert) == "[INFO] a &lt;b&gt; &amp; c"


@pytest.mark.django_db
def test_it_retries_a_failing_webhook_with_growing_backoff_then_gives_up(
    receiver, django_capture_on_commit_callbacks
):
    receiver.status = 500
    # The caller's transaction and its on-commit enqueues go through although the receiver
    # is failing: nothing is sent before commit, and nothing after commit raises.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        alert = _raise(title="Halt engaged")
    assert len(callbacks) == 2
    assert Alert.objects.filter(pk=alert.pk).exists()
    t0 = timezone.now()

    notification = _deliver(_notification(alert, "webhook:test"), now=t0)

    assert (notification.status, notification.attempts) == (Status.PENDING, 1)
    assert "HTTP 500" in notification.last_error
    t1 = notification.next_attempt_at
    assert 2.5 <= (t1 - t0).total_seconds() <= 5
    assert _deliver(notification, now=t0).attempts == 1  # not due yet: nothing is sent
    assert len(receiver.calls) == 1

    notification = _deliver(notification, now=t1)

    assert (notification.status, notification.attempts) == (Status.PENDING, 2)
    t2 = notification.next_attempt_at
    assert 5 <= (t2 - t1).total_seconds() <= 10
    assert t2 - t1 > t1 - t0

    for _ in range(settings.NOTIFICATION_MAX_ATTEMPTS):
        if notification.status == Status.PENDING:
            notification = _deliver(notification, now=notification.next_attempt_at)
    assert notification.status == Status.FAILED
    assert notification.attempts == settings.NOTIFICATION_MAX_ATTEMPTS == len(receiver.calls)
    assert "HTTP 500" in notification.last_error


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (400, Status.FAILED),
        (404, Status.FAILED),
        (301, Status.FAILED),  # not followed: it would re-send the signed body elsewhere
        (408, Status.PENDING),
        (429, Status.PENDING),
        (503, Status.PENDING),
    ],
)
def test_it_gives_up_at_once_only_on_a_permanent_refusal(receiver, answer, status):
    receiver.status = answer
    alert = _raise()

    notification = _deliver(_notification(alert, "webhook:test"))

    assert (notification.status, notification.attempts) == (status, 1)
    assert f"HTTP {answer}" in notification.last_error


@pytest.mark.django_db
def test_it_retries_a_refused_connection():
    nobody = f"http://127.0.0.1:{free_port()}/hook"
    with override_settings(ALERT_WEBHOOKS={"down": nobody}, ALERT_WEBHOOK_SECRET=SECRET):
        alert = _raise()
        t0 = timezone.now()
        notification = _deliver(_notification(alert, "webhook:down"), now=t0)

    assert (notification.status, notification.attempts) == (Status.PENDING, 1)
    assert "refused" in notification.last_error.lower()
    assert notification.next_attempt_at > t0


@pytest.mark.django_db
def test_it_fails_a_webhook_removed_from_the_settings(receiver):
    alert = _raise()
    with override_settings(ALERT_WEBHOOKS={}):
        notification = _deliver(_notification(alert, "webhook:test"))

    assert (notification.status, notification.attempts) == (Status.FAILED, 1)
    assert "ALERT_WEBHOOKS" in notification.last_error
    assert receiver.calls == []


@pytest.mark.django_db
def test_it_is_a_no_op_when_replayed(receiver):
    notification = _notification(_raise(), "webhook:test")

    _deliver(notification)
    notification = _deliver(notification)

    assert (notification.status, notification.attempts) == (Status.SENT, 1)
    assert len(receiver.calls) == 1


@pytest.mark.django_db(transaction=True)  # each thread has its own connection: rows must commit
def test_it_sends_once_when_two_workers_deliver_at_once(receiver):
    receiver.delay = 0.3  # the first send is still in flight when the second worker tries
    alert = Alert.objects.create(kind="halt.engaged", title="Halt engaged")
    notifications = [
        Notification.objects.create(alert=alert, channel=f"webhook:test{n}") for n in range(5)
    ]

    with override_settings(
        ALERT_WEBHOOKS={f"test{n}": receiver.url for n in range(5)}, ALERT_WEBHOOK_SECRET=SECRET
    ):
        for notification in notifications:
            start = threading.Barrier(2)

            def worker(notification_id: int = notification.pk, start=start) -> None:
                try:
                    start.wait()
                    notification_deliver(notification_id=notification_id)
                finally:
                    connections.close_all()

            threads = [threading.Thread(target=worker) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)

    assert len(receiver.calls) == 5  # one per notification, never two
    rows = Notification.objects.filter(alert=alert)
    assert {(n.status, n.attempts) for n in rows} == {(Status.SENT, 1)}


@pytest.mark.django_db
def test_it_takes_over_a_send_left_by_a_dead_worker(receiver):
    alert = _raise()
    now = timezone.now()
    stale = now - timedelta(seconds=settings.NOTIFICATION_CLAIM_SECONDS + 1)
    notification = _notification(alert, "webhook:test")
    Notification.objects.filter(pk=notification.pk).update(status=Status.SENDING, claimed_at=stale)
    console = _notification(alert, "console")
    Notification.objects.filter(pk=console.pk).update(status=Status.SENDING, claimed_at=now)

    assert _deliver(notification, now=now).status == Status.SENT
    assert _deliver(console, now=now).status == Status.SENDING  # its worker is still at it
    assert len(receiver.calls) == 1


@pytest.mark.django_db
def test_it_sweeps_retries_lost_first_sends_and_sends_of_dead_workers():
    now = timezone.now()
    alert = Alert.objects.create(kind="breaker.opened", title="Breaker opened")
    long_ago, just_now = now - timedelta(minutes=5), now - timedelta(seconds=1)

    def row(channel: str, **fields) -> int:
        return Notification.objects.create(alert=alert, channel=channel, **fields).pk

    due = {
        row("retry-due", attempts=1, next_attempt_at=just_now),
        row("first-lost", next_attempt_at=long_ago),
        row("dead-worker", status=Status.SENDING, next_attempt_at=long_ago, claimed_at=long_ago),
    }
    row("retry-later", attempts=1, next_attempt_at=now + timedelta(seconds=30))
    row("first-queued", next_attempt_at=just_now)  # its on-commit task is on its way
    row("sending", status=Status.SENDING, next_attempt_at=long_ago, claimed_at=just_now)
    row("sent", status=Status.SENT, attempts=1, next_attempt_at=long_ago)
    row("failed", status=Status.FAILED, attempts=8, next_attempt_at=long_ago)

    assert set(notifications_deliver_due(now=now)) == due


@pytest.mark.parametrize("attempts", range(1, 12))
def test_it_backs_off_exponentially_up_to_ten_minutes(attempts):
    ceiling = min(600, 5 * 2 ** (attempts - 1))

    wait = notification_backoff(attempts=attempts).total_seconds()

    assert ceiling / 2 <= wait <= ceiling


# --- email --------------------------------------------------------------------------------


@pytest.fixture
def people(django_user_model) -> None:
    make = django_user_model.objects.create_user
    django_user_model.objects.create_superuser("root", "root@example.org")
    with_role(make("ada", "ada@example.org"), "admin")
    with_role(make("bob", ""), "admin")  # no address
    with_role(make("cy", "cy@example.org", is_active=False), "admin")
    with_role(make("ops", "ops@example.org"), "operator")
    with_role(make("vi", "vi@example.org"), "viewer")


@pytest.mark.django_db
def test_it_mails_an_admins_alert_to_the_admins_only(people, mailoutbox):
    alert = _raise(
        audience=Alert.Audience.ADMINS,
        level=Alert.Level.CRITICAL,
        kind="interrupt.expired",
        title="Interrupt 7 expired",
        body="The default (reject) applied.",
    )

    notification = _deliver(_notification(alert, "email"))

    assert notification.status == Status.SENT
    [mail] = mailoutbox
    assert mail.to == ["ada@example.org", "root@example.org"]
    assert mail.subject == "[CRITICAL] Interrupt 7 expired"
    assert "The default (reject) applied." in mail.body
    assert mail.from_email == settings.DEFAULT_FROM_EMAIL


@pytest.mark.django_db
def test_it_mails_an_operators_alert_to_operators_and_admins(people, mailoutbox):
    alert = _raise(audience=Alert.Audience.OPERATORS)

    _deliver(_notification(alert, "email"))

    [mail] = mailoutbox
    assert mail.to == ["ada@example.org", "ops@example.org", "root@example.org"]


# --- console ------------------------------------------------------------------------------


@pytest.fixture
def session_cookie(client, django_user_model) -> bytes:
    user = django_user_model.objects.create_user("operator", password="a long passphrase")
    client.force_login(with_role(user, "operator"))
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_pushes_the_alert_to_every_console(session_cookie):
    headers = [
        (b"host", b"localhost"),
        (b"cookie", session_cookie),
        (b"origin", b"http://localhost"),
    ]
    communicator = WebsocketCommunicator(application, "/ws/console/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected

    def raise_and_deliver() -> Notification:
        # Written directly, with no on-commit enqueue, so that no worker races this test.
        alert = Alert.objects.create(
            kind="halt.engaged", level=Alert.Level.CRITICAL, title="Global halt <engaged>"
        )
        return _deliver(Notification.objects.create(alert=alert, channel="console"))

    notification = await sync_to_async(raise_and_deliver)()

    marker = f'id="alert-{notification.alert_id}"'
    async with asyncio.timeout(10):  # liveness beats of a test worker may come first
        while marker not in (message := await communicator.receive_from(timeout=10)):
            pass
    await communicator.disconnect()
    assert notification.status == Status.SENT
    assert message.lstrip().startswith('<div hx-swap-oob="afterbegin:#alerts">')
    assert 'class="alert alert-critical"' in message
    assert "Global halt &lt;engaged&gt;" in message
    assert "csrfmiddlewaretoken" not in message


# --- end to end ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the worker must see the committed rows
def test_it_delivers_through_the_worker_after_commit(celery_worker):
    server = Receiver(port=E2E_PORT)
    try:
        with override_settings(
            ALERT_WEBHOOKS={"e2e": f"http://127.0.0.1:{E2E_PORT}/hook"},
            ALERT_WEBHOOK_SECRET=SECRET,
        ):
            alert = _raise(kind="halt.engaged", title="Global halt engaged")

        [(headers, body)] = wait_for(lambda: server.calls)
        sent = wait_for(
            lambda: (
                set(
                    alert.notifications.filter(status=Status.SENT).values_list("channel", flat=True)
                )
                == {"console", "webhook:e2e"}
            )
        )
    finally:
        server.close()

    assert sent
    assert _verified(headers, body)
    assert json.loads(body)["alert"]["id"] == alert.pk


# --- settings -----------------------------------------------------------------------------


def _start_django(**env: str) -> subprocess.CompletedProcess[str]:
    code = "import django; django.setup(); from django.conf import settings as s; "
    code += "print(s.ALERT_WEBHOOKS)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "console.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("webhooks", "secret", "named"),
    [
        ("ops", "s", "ALERT_WEBHOOKS"),
        ("ops=ftp://files.example.org/", "s", "ALERT_WEBHOOKS"),
        ("o p=https://hooks.example.org/", "s", "ALERT_WEBHOOKS"),
        ("ops=https://a.example.org/,ops=https://b.example.org/", "s", "ALERT_WEBHOOKS"),
        ("ops=https://hooks.example.org/", "", "ALERT_WEBHOOK_SECRET"),
    ],
)
def test_it_refuses_a_bad_webhook_setting_naming_the_variable(webhooks, secret, named):
    result = _start_django(ALERT_WEBHOOKS=webhooks, ALERT_WEBHOOK_SECRET=secret)

    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert last_line.startswith("common.env.EnvError: ")
    assert named in last_line


def test_it_reads_named_webhooks():
    result = _start_django(
        ALERT_WEBHOOKS="ops=https://hooks.example.org/a?x=1, pager=http://10.0.0.5:8080/in",
        ALERT_WEBHOOK_SECRET="s",
    )

    assert result.returncode == 0, result.stderr
    expected = {"ops": "https://hooks.example.org/a?x=1", "pager": "http://10.0.0.5:8080/in"}
    assert result.stdout.strip() == repr(expected)
