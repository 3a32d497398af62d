"""Worker event → websocket client, with 1, 50 and 200 connected consoles while the worker
emits 100 events/s (DESIGN.md section 6), next to raw Redis pub/sub in the same run:
`./bin/bench fanout` (bench.__main__ starts the services, the worker and Daphne).

The clients are real websocket clients (`websockets`), signed in as a domain page is, all in
one asyncio loop here, which only stamps and stores each frame (parsed afterwards).

An **event** is a `bench.fanout_event` task on the real worker (bench.declarations): in a
transaction it takes the next seq of the state (a Redis INCR), stamps the time just before,
and pushes the state after commit through common.push.push_coalesced_on_commit, the path of
a busy domain's stack: the first change of a burst at once, the rest as one trailing push
rendered later from the state of that moment. The fragment carries the seq it was rendered
with. Event k's latency at a client is the arrival of the first frame there whose seq ≥ k
minus k's stamp, so it includes the wait for the coalesced push. Every client must receive
the last seq (the latest state always arrives); those that did not are counted.

Beside it: an uncoalesced event (`bench.fanout_once`) a few times a second, and the baseline,
raw Redis pub/sub (as many subscribers in the same loop, each message stamped before PUBLISH),
as many messages a second as each console got frames (about 10, not 100: 200 subscribers
parsing 20,000 a second would measure this one Python process, not Redis).
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import percentiles

CLIENTS = (1, 50, 200)
FIXED_WINDOW = 0.1  # the window before it adapted (issue 8's COALESCE_SECONDS), to compare


def configurations(processes: int) -> list[tuple[int, int, float | None]]:
    """(Daphne processes, clients, window: None adapts) measured by `./bin/bench fanout`:
    the run command's WEB_PROCESSES with the adaptive window at 1, 50 and 200 clients, then
    what each change bought at 200 (and at 1, the window's other end): the fixed window of
    before, and one Daphne process, with either window."""
    single = [(1, 200, None), (1, 200, FIXED_WINDOW)] if processes != 1 else []
    return [
        *[(processes, n, None) for n in CLIENTS],
        (processes, 200, FIXED_WINDOW),
        (processes, 1, FIXED_WINDOW),
        *single,
    ]


ONCE_EVENTS, ONCE_RATE = 20, 5.0  # the uncoalesced events: a few a second
FINAL_WAIT = 30.0  # after the last event, for every client to hold the last state
SEQ = re.compile(r'data-seq="([0-9]+)"')
ONCE = re.compile(r'data-once="([0-9]+)"')


def fanout_latency(
    base_url: str,
    clients: int,
    rate: float = 100,
    seconds: float = 20.0,
    *,
    window: float | None = None,
    daphne_pids: list[int] | None = None,
) -> dict[str, Any]:
    """Connect `clients` websocket consoles, then measure: uncoalesced events, `rate`
    coalesced events a second for `seconds` (coalesced in `window` seconds, or by the
    adaptive window if None), and raw Redis pub/sub at the same rate."""
    import redis
    from django.conf import settings
    from django.db import connections

    from bench.common import admin_user, session_key
    from common.push import domain_group
    from loops.models import Domain

    cookie = f"{settings.SESSION_COOKIE_NAME}={session_key(admin_user())}"
    group = domain_group(Domain.objects.get(slug="bench").pk)
    connections.close_all()
    prefix = f"bench-fanout:{uuid.uuid4().hex[:12]}"
    ws_url = base_url.replace("http", "ws", 1) + f"/ws/console/?topics={group}"
    pids = daphne_pids or []
    run = asyncio.run(
        _run(ws_url, base_url, cookie, clients, prefix, group, rate, seconds, window, pids)
    )

    client = redis.Redis.from_url(settings.REDIS_URL)
    stamps = {int(k): float(v) for k, v in client.hgetall(f"{prefix}:at").items()}
    once_at = {int(k): float(v) for k, v in client.hgetall(f"{prefix}:once").items()}
    client.delete(f"{prefix}:at", f"{prefix}:once", f"{prefix}:seq")
    result = _coalesced(run["frames"], stamps, run["event_seconds"])
    return {
        "clients": clients,
        "web_processes": len(pids),
        "window": "adaptive" if window is None else window,
        "rate": rate,
        "seconds": seconds,
        **result,
        "sockets_per_process": run["sockets"],
        "window_seconds": run["window_seconds"],
        "uncoalesced_ms": _uncoalesced(run["frames"], once_at, ONCE_EVENTS),
        "raw_pubsub_ms": percentiles(run["raw"]),
        "raw_pubsub_rate": run["raw_rate"],
        "event_vs_raw": round(
            result["event_ms"]["median"] / max(statistics.median(run["raw"]), 0.001), 1
        ),
        "cpu": run["cpu"],
        # Daphne's CPU per frame written: what one frame costs a process, whatever it got.
        "daphne_cpu_ms_per_frame": round(
            sum(run["cpu"].get("daphne", [0.0]))
            * 1000
            / max(result["frames_per_second_per_client"] * clients, 0.001),
            3,
        ),
    }


async def _run(
    ws_url: str,
    base_url: str,
    cookie: str,
    n: int,
    prefix: str,
    group: str,
    rate: float,
    seconds: float,
    window: float | None,
    daphne_pids: list[int],
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from bench.declarations import fanout_event, fanout_once

    loop = asyncio.get_running_loop()
    frames: list[list[tuple[float, str]]] = [[] for _ in range(n)]
    sockets: list[Any] = []
    gate = asyncio.Semaphore(20)  # handshakes in parallel: each one reads the session

    async def console(i: int, ready: asyncio.Event) -> None:
        async with gate:
            ws = await connect(
                ws_url,
                origin=base_url,  # type: ignore[arg-type]
                additional_headers={"Cookie": cookie},
                compression=None,
                max_queue=None,
                open_timeout=30,
            )
        sockets.append(ws)
        ready.set()
        mine = frames[i]
        try:
            while True:
                message = await ws.recv()
                mine.append((time.time(), message))  # type: ignore[arg-type]
        except Exception:  # noqa: S110 - closed at the end
            pass

    ready_events = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(console(i, ready_events[i])) for i in range(n)]
    connected: asyncio.Future[Any] = asyncio.ensure_future(
        asyncio.gather(*(e.wait() for e in ready_events))
    )
    await asyncio.wait([connected, *tasks], timeout=120, return_when=asyncio.FIRST_COMPLETED)
    if not connected.done():
        connected.cancel()
        for task in tasks:
            if task.done():
                task.result()  # a refused handshake: say why
        raise RuntimeError("the websocket clients did not connect")
    await asyncio.sleep(1.0)  # the last sockets have joined their groups
    held = _sockets(daphne_pids, ws_url)
    taken = window  # the adaptive one: what the worker will read from the consumers' counts
    if taken is None:
        from common.push import coalesce_window

        taken = await loop.run_in_executor(None, coalesce_window, group)

    def once(k: int) -> None:
        fanout_once.delay(prefix, group, k)

    await loop.run_in_executor(None, _paced, once, ONCE_EVENTS, ONCE_RATE)
    await asyncio.sleep(1.0)

    def event(k: int) -> None:
        fanout_event.delay(prefix, group, window)

    cpu = _Cpu(daphne_pids)
    began = time.time()
    count = round(rate * seconds)
    await loop.run_in_executor(None, _paced, event, count, rate)
    event_seconds = time.time() - began
    # The latest state always arrives: wait (up to FINAL_WAIT) until every client holds it.
    deadline = time.time() + FINAL_WAIT
    while time.time() < deadline and not all(_last_seq(mine) >= count for mine in frames):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    cpu_use = cpu.used()
    # Closed, and gone from Daphne, before the next measurement: a socket left open would
    # go on receiving (and costing) that one's pushes.
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    deadline = time.time() + 30
    while any(_sockets(daphne_pids, ws_url)) and time.time() < deadline:
        await asyncio.sleep(0.2)

    # The baseline gets as many messages a second per subscriber as a console got frames.
    pushed = sum(len(mine) for mine in frames) / max(n, 1) / (time.time() - began)
    raw_rate = max(1.0, round(pushed))
    raw_cpu = _Cpu([])
    raw = await _raw_pubsub(n, raw_rate, min(seconds, 10.0))
    cpu_use["bench_process_raw_pubsub"] = raw_cpu.used()["bench_process"]
    return {
        "frames": frames,
        "raw": raw,
        "raw_rate": raw_rate,
        "event_seconds": event_seconds,
        "cpu": cpu_use,
        "sockets": held,
        "window_seconds": taken,
    }


def _sockets(pids: list[int], ws_url: str) -> list[int]:
    """The websockets each Daphne process holds: how the kernel spread them."""
    import psutil

    port = int(ws_url.split(":")[2].split("/")[0])
    return [
        sum(
            1
            for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        )
        for pid in pids
    ]


def _last_seq(mine: list[tuple[float, str]]) -> int:
    for _, text in reversed(mine):
        if m := SEQ.search(text):
            return int(m.group(1))
    return 0


async def _raw_pubsub(n: int, rate: float, seconds: float) -> list[float]:
    """N subscribers in this loop; a publisher thread stamps each message before PUBLISH."""
    import redis
    import redis.asyncio as aioredis
    from django.conf import settings

    channel = f"bench-raw:{uuid.uuid4().hex[:12]}"
    received: list[list[tuple[float, bytes]]] = [[] for _ in range(n)]
    subscriber = aioredis.Redis.from_url(settings.REDIS_URL, max_connections=n + 1)
    pubsubs = [subscriber.pubsub(ignore_subscribe_messages=True) for _ in range(n)]
    for pubsub in pubsubs:
        await pubsub.subscribe(channel)

    async def listen(i: int) -> None:
        mine = received[i]
        async for message in pubsubs[i].listen():
            mine.append((time.time(), message["data"]))

    tasks = [asyncio.create_task(listen(i)) for i in range(n)]
    await asyncio.sleep(0.5)
    publisher = redis.Redis.from_url(settings.REDIS_URL)

    def publish(k: int) -> None:
        publisher.publish(channel, repr(time.time()))

    await asyncio.get_running_loop().run_in_executor(
        None, _paced, publish, round(rate * seconds), rate
    )
    await asyncio.sleep(1.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for pubsub in pubsubs:
        await pubsub.aclose()
    await subscriber.aclose()
    publisher.close()
    return [(at - float(data)) * 1000 for mine in received for at, data in mine]


def _paced(send: Callable[[int], None], count: int, rate: float) -> None:
    """Call send(k) for k = 1..count at `rate` a second, on a fixed schedule (no drift)."""
    start = time.perf_counter()
    for k in range(1, count + 1):
        delay = start + (k - 1) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(k)


def _coalesced(
    frames: list[list[tuple[float, str]]], stamps: dict[int, float], event_seconds: float
) -> dict[str, Any]:
    """Event k at a client: the first frame there with seq ≥ k, minus k's stamp."""
    last = max(stamps)
    latencies, ages, missed_final, missed_events, per_client = [], [], 0, 0, []
    final: list[float] = []  # when each client got the last state, after its stamp
    for mine in frames:
        seqs = [(at, int(m.group(1))) for at, text in mine if (m := SEQ.search(text))]
        per_client.append(len(seqs) / event_seconds)
        k = 1
        for at, seq in seqs:
            if seq in stamps:
                ages.append((at - stamps[seq]) * 1000)
            while k <= seq and k <= last:
                latencies.append((at - stamps[k]) * 1000)
                k += 1
                if k > last:
                    final.append((at - stamps[last]) * 1000)
        missed_events += last - (k - 1)
        missed_final += k <= last
    return {
        "events": len(stamps),
        "event_ms": percentiles(latencies),
        # Arrival minus the stamp of the seq the frame carries: the push path alone,
        # without the wait for the coalesced push.
        "frame_age_ms": percentiles(ages),
        "frames_per_second_per_client": round(statistics.median(per_client), 2),
        "clients_missing_final_state": missed_final,
        "final_state_at_last_client_ms": round(max(final), 1) if final else None,
        "events_never_covered": missed_events,
    }


def _uncoalesced(
    frames: list[list[tuple[float, str]]], once_at: dict[int, float], expected: int
) -> dict[str, Any]:
    latencies, missed = [], 0
    for mine in frames:
        seen = {}
        for at, text in mine:
            if (m := ONCE.search(text)) and int(m.group(1)) not in seen:
                seen[int(m.group(1))] = at
        latencies += [(seen[k] - once_at[k]) * 1000 for k in once_at if k in seen]
        missed += expected - len(seen)
    return {**percentiles(latencies), "missed": missed}


class _Cpu:
    """CPU seconds per wall second of this process (and of each Daphne, given their pids)."""

    def __init__(self, daphne_pids: list[int]) -> None:
        self.pids = daphne_pids
        self.wall, self.mine, self.daphne = time.time(), time.process_time(), self._daphne()

    def _daphne(self) -> list[float]:
        used = []
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        return used

    def used(self) -> dict[str, Any]:
        wall = time.time() - self.wall
        use: dict[str, Any] = {"bench_process": round((time.process_time() - self.mine) / wall, 2)}
        if self.pids:
            now = self._daphne()
            use["daphne"] = [
                round((b - a) / wall, 2) for a, b in zip(self.daphne, now, strict=True)
            ]
        return use


def rows(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    table = []
    for fan in results["fanout"]:
        n, event, raw = fan["clients"], fan["event_ms"], fan["raw_pubsub_ms"]
        once = fan["uncoalesced_ms"]
        target = " (must p99 ≤ 250, aim ≤ 100)" if n >= 200 else ""
        window = f"{fan['window']} {fan.get('window_seconds')} s"
        how = f"{fan.get('web_processes', 1)} web, {window}"
        target += f"; sockets per process {fan.get('sockets_per_process')}"
        table += [
            (
                f"100 events/s → {n} client{'s' if n > 1 else ''} ({how}) (ms)",
                f"{event['median']} / {event['p99']}",
                f"median / p99, coalesced; raw pub/sub {raw['median']} / {raw['p99']}, "
                f"{fan['event_vs_raw']}x; {fan['clients_missing_final_state']} missed the "
                f"latest state; Daphne {fan.get('daphne_cpu_ms_per_frame')} ms CPU a frame"
                f"{target}",
            ),
            (
                f"  one event alone → {n} client{'s' if n > 1 else ''} ({how}) (ms)",
                f"{once['median']} / {once['p99']}",
                f"median / p99, uncoalesced; {once['missed']} missed"
                + (" (must p99 ≤ 20, aim ≤ 5)" if n == 1 else ""),
            ),
        ]
    return table
