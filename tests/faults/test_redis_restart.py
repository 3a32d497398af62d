"""Redis crashes and comes back on the same port while runs iterate on a real worker, a
decision's step is on its way and a halt was just engaged: Celery's broker connections (the
worker's and this process's) and the channel layer recover; every invariant holds.

The restart is `DEBUG CRASH-AND-RECOVER 2000` on the supervised redis-server: it closes every
socket (the listener too) without saving, stays down 2 s (connections are refused), then
execs itself again on the same port and reloads its append-only file — what a kill -9 and a
start do, while the same process stays the launcher's child (a server started here instead
would outlive the supervisor's ordered stop, or die with this pytest process and leave the
browser tests that bin/test runs next without one)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import uuid

import pytest
from channels.layers import get_channel_layer

from common.push import CONSOLE_GROUP, push_html
from loops import services
from oversight.services import interrupts
from tests.conftest import own_redis, redis_crash, redis_server_id, wait_for
from tests.faults.conftest import (
    check_invariants,
    halt_runs,
    iterations_of,
    new_worker,
    start_interrupt,
    start_mix,
    stop_all,
    user,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("declared")]


class Listener:
    """A websocket's side of the channel layer, in this process: a channel in a group,
    read on an event loop of its own, as Daphne's consumers read theirs."""

    def __init__(self, group: str) -> None:
        self.received: queue.Queue = queue.Queue()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.layer = get_channel_layer()
        self.task = asyncio.run_coroutine_threadsafe(self._listen(group), self.loop)

    async def _listen(self, group: str) -> None:
        channel = await self.layer.new_channel()
        await self.layer.group_add(group, channel)
        self.received.put("subscribed")
        while True:
            self.received.put(await self.layer.receive(channel))

    def got(self, html: str) -> bool:
        with contextlib.suppress(queue.Empty):
            while True:
                message = self.received.get_nowait()
                if isinstance(message, dict) and message.get("html") == html:
                    return True
        return False

    def close(self) -> None:
        self.task.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)


def _push_arrives(listener: Listener) -> bool:
    """A push from here (common.push's loop) reaches the listener (its own loop)."""
    marker = f"<p id='probe'>{uuid.uuid4().hex}</p>"
    with contextlib.suppress(Exception):  # Redis may still refuse: try again
        push_html(CONSOLE_GROUP, marker)
    return wait_for_quietly(lambda: listener.got(marker), 1.0)


def wait_for_quietly(predicate, timeout: float) -> bool:
    with contextlib.suppress(pytest.fail.Exception):
        return bool(wait_for(predicate, timeout, interval=0.05))
    return False


def test_nothing_is_lost_when_redis_restarts_mid_run(workers):
    client = own_redis()  # skipped, before anything starts, against anybody else's
    operator, admin = user("otto", "operator"), user("ada", "admin")
    new_worker(workers, "steady")
    interrupted, interrupt = start_interrupt()
    mix = start_mix(slow=6, stacks=2, fanouts=1, forever=4, halted=2)
    mix.ending.append(interrupted)
    mix.expected[interrupted] = "succeeded"  # approved: the proposal is the result
    mix.interrupts.append(interrupted)
    listener = Listener(CONSOLE_GROUP)
    try:
        wait_for(lambda: listener.received.get(timeout=10) == "subscribed", 15)
        wait_for(lambda: min(iterations_of(mix.forever).values()) >= 3, 60)
        engaged = halt_runs(operator, mix.halted)
        interrupts.interrupt_decide(interrupt_id=interrupt.pk, actor=operator, decision="approve")
        before = redis_crash(client)
        # While Redis is down, a run started commits and answers: its first step's send
        # fails (logged), and the reaper steps it once Redis is back (H4); an error here
        # would make a client retry, and start it twice.
        assert redis_server_id(client) is None
        during = services.run_start(domain="lab", blueprint="lab-slow", input={})
        mix.ending.append(during.pk)
        mix.expected[during.pk] = "succeeded"
        wait_for(lambda: redis_server_id(client) not in (None, before), 30)

        # This process sends again (a new run's first step), and pushes reach a listener.
        after = services.run_start(domain="lab", blueprint="lab-slow", input={})
        mix.ending.append(after.pk)
        mix.expected[after.pk] = "succeeded"
        wait_for(lambda: _push_arrives(listener), 30, interval=0)
        check_invariants(mix, halts_held=engaged, lifter=admin, timeout=90)
    finally:
        listener.close()
        wait_for(lambda: redis_server_id(client) is not None, 30)  # up for the tests after this
        stop_all([*mix.roots, interrupted])
