"""Our loop iteration next to the same iteration in LangGraph, in the same run (issue 14):
`./bin/bench peers` (with `core`, which it runs too: the ratios need our figures of the run).

The graph does what one iteration of `bench-iterate` does (bench.declarations):

    START → broadcast ─┬→ noop-1 ─┐
                       ├→ noop-2 ─┼→ merge ─→ broadcast … (until 25 iterations) → END
                       └→ noop-3 ─┘

- **broadcast** asks the three agents for bids; each bids a trivial confidence, as our no-op
  agents do;
- a conditional edge selects every agent that bid (our blueprint's `selection="all"`) and
  fans out to the three **no-op agent nodes**, which run in the same step, like our three
  selected calls;
- **merge** collects every result (`collect_all`) and validates them with a validator that
  always rejects (as `bench.never` does), which closes the iteration;
- a conditional **loop edge** goes back to broadcast until the 25th iteration has closed.

Three steps an iteration, each checkpointed by `AsyncPostgresSaver` into the bench's own
PostgreSQL (DATABASE_URL, the same server and settings as our runs; its own schema,
`langgraph_peers`, created here, its tables set up once and emptied at the start of each
run, as the bench empties ours). Durability `"sync"`: the step's checkpoint is committed
before the next step starts, which is what our engine does (a step's transaction commits
before the next step is queued). LangGraph's default, `"async"`, writes it while the next
step already runs, so a crash can lose a step that was done; `"exit"` writes only at the
end. The server's `synchronous_commit` is as configured (reported beside the figures).

How it runs, chosen to give LangGraph its best honest figure on this 2-core machine:

- in processes of its own (spawned, so that the measured ones carry nothing of this
  process's Django), as many as the machine has cores, like our worker's prefork pool;
  started, connected and warmed up (one batch each) before any timing;
- asyncio, one event loop a process, `ainvoke` of all the process's graphs at once, over
  an `AsyncConnectionPool` of one connection per graph. Measured here with 2 processes of 20
  graphs: LangGraph's own CPU was ~5 ms per iteration this way and 6 to 7 ms with the sync
  `PostgresSaver` in threads, and the throughput was higher;
- one saver per graph run over that shared pool: a saver serialises its own database calls
  (a lock per instance), so 20 graphs on one saver ran at 1 checkpoint write at a time and
  reached only ~100 iterations/s instead of ~250;
- single: one graph in one such process, 25 iterations, wall time per iteration, the median
  of REPEATS runs; 40 at once: the 40 graphs spread over the processes, total iterations
  over the wall time from "go" to the last graph's end, the median of 3.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import operator
import os
import statistics
import time
import uuid
from multiprocessing.connection import Connection
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Overwrite

from bench.common import REPEATS, summary

GRAPHS = 40  # at once, as core's iterations_per_second(40)
SCHEMA = "langgraph_peers"
AGENTS = ("noop-1", "noop-2", "noop-3")
DURABILITY = "sync"  # see the module's docstring


class IterationState(TypedDict):
    iteration: int  # iterations closed
    bids: dict[str, float]  # this iteration's, by agent
    results: Annotated[list[dict[str, Any]], operator.add]  # this iteration's, one per agent
    feedback: str  # the validator's, for the next broadcast


class NoOp:
    """As bench.declarations.NoOp: a trivial bid, no output."""

    def bid(self, task: dict[str, Any]) -> float:
        return 0.5

    def perform(self, task: dict[str, Any]) -> Any:
        return None


NOOP = NoOp()


def broadcast(state: IterationState) -> dict[str, Any]:
    task = {"iteration": state["iteration"] + 1, "feedback": state["feedback"]}
    # Overwrite: the new iteration's results start empty (the reducer would add to the last).
    return {"bids": {name: NOOP.bid(task) for name in AGENTS}, "results": Overwrite([])}


def select(state: IterationState) -> list[str]:
    """Every agent that bid, as `selection="all"`: the fan-out to their nodes."""
    return list(state["bids"])


def agent_node(name: str) -> Any:
    def perform(state: IterationState) -> dict[str, Any]:
        task = {"iteration": state["iteration"] + 1, "agent": name}
        return {"results": [{"agent": name, "output": NOOP.perform(task)}]}

    return perform


def never(value: list[Any]) -> tuple[bool, str]:
    """As bench.never: reject every round, so the loop runs until its last iteration."""
    return False, "again"


def merge(state: IterationState) -> dict[str, Any]:
    merged = sorted(state["results"], key=operator.itemgetter("agent"))  # collect_all
    if len(merged) != len(select(state)):
        raise RuntimeError(f"merge saw {len(merged)} results of {len(select(state))} calls")
    _, feedback = never([result["output"] for result in merged])
    return {"iteration": state["iteration"] + 1, "feedback": feedback}


def build(checkpointer: Any, iterations: int) -> Any:
    def again(state: IterationState) -> str:
        return "broadcast" if state["iteration"] < iterations else END

    graph = StateGraph(IterationState)
    graph.add_node("broadcast", broadcast)
    graph.add_node("merge", merge)
    for name in AGENTS:
        graph.add_node(name, agent_node(name))
        graph.add_edge(name, "merge")
    graph.add_edge(START, "broadcast")
    graph.add_conditional_edges("broadcast", select, list(AGENTS))
    graph.add_conditional_edges("merge", again, ["broadcast", END])
    return graph.compile(checkpointer=checkpointer)


def peers(results: dict[str, Any]) -> dict[str, Any]:
    """LangGraph's figures, and ours as ratios to them (`results` holds core's, of this run)."""
    from django.conf import settings

    from bench.declarations import ITERATIONS
    from console.launcher import _stage

    url = settings.DATABASE_URL
    _stage(
        f"Measuring LangGraph with its PostgreSQL checkpointer: {REPEATS} runs alone, then "
        f"3 times {GRAPHS} at once"
    )
    synchronous_commit = _prepare(url)
    processes = os.cpu_count() or 1
    with _Graphs(url, [1], ITERATIONS) as one:
        single = [seconds / n * 1000 for n, seconds in (one.run() for _ in range(REPEATS))]
    shares = [GRAPHS // processes + (i < GRAPHS % processes) for i in range(processes)]
    with _Graphs(url, shares, ITERATIONS) as many:
        rates = [n / seconds for n, seconds in (many.run() for _ in range(3))]
    done = one.iterations + many.iterations
    figures: dict[str, Any] = {
        "langgraph_iteration_ms": summary(single),
        "langgraph_iterations_per_second": summary(rates),
        "checkpoints_per_iteration": round(_checkpoints(url) / done, 2),
        "synchronous_commit": synchronous_commit,
        "versions": _versions(),
        "notes": f"the same iteration as core's (broadcast with 3 bids, 3 no-op agent nodes, "
        f"merge and validate, a loop edge), {ITERATIONS} iterations a graph; "
        f"AsyncPostgresSaver, durability={DURABILITY!r} (each step's checkpoint committed "
        f"before the next); {processes} processes, asyncio, one saver per graph over a pool "
        "of one connection per graph",
    }
    if "iteration_ms" in results:
        ours_ms, ours_rate = (
            results["iteration_ms"]["median"],
            results["iterations_per_second"]["median"],
        )
        lg_ms, lg_rate = statistics.median(single), statistics.median(rates)
        figures["ours_time_vs_langgraph"] = round(ours_ms / lg_ms, 2)
        figures["ours_throughput_vs_langgraph"] = round(ours_rate / lg_rate, 2)
        figures["langgraph_iteration_vs_round_trip"] = round(
            lg_ms / results["celery_round_trip_ms"]["median"], 2
        )
    return figures


def rows(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    peer = results["peers"]
    ours = "ours_time_vs_langgraph" in peer
    return [
        (
            "LangGraph + PostgreSQL: time per iteration (ms)",
            peer["langgraph_iteration_ms"]["median"],
            f"{peer['langgraph_iteration_vs_round_trip']}x the round trip; "
            f"ours {peer['ours_time_vs_langgraph']}x its time"
            if ours
            else "",
        ),
        (
            "LangGraph + PostgreSQL: iterations/s, 40 at once",
            peer["langgraph_iterations_per_second"]["median"],
            f"ours {peer['ours_throughput_vs_langgraph']}x its throughput" if ours else "",
        ),
    ]


def verdict(results: dict[str, Any]) -> str:
    """One line for the end of the report: are we still ahead?"""
    peer = results["peers"]
    if "ours_time_vs_langgraph" not in peer:
        return ""
    time_ratio, rate_ratio = peer["ours_time_vs_langgraph"], peer["ours_throughput_vs_langgraph"]
    ahead = "ahead" if time_ratio <= 1 and rate_ratio >= 1 else "not ahead"
    return (
        f"Ours {time_ratio}x LangGraph's time per iteration, {rate_ratio}x its throughput: "
        f"{ahead} of it in this run.\n  LangGraph's iteration is "
        f"{peer['langgraph_iteration_vs_round_trip']}x this run's Celery round trip."
    )


def _connect_kwargs() -> dict[str, Any]:
    """What PostgresSaver.from_conn_string connects with, in our schema, named for
    pg_stat_activity."""
    from psycopg.rows import dict_row

    return {
        "autocommit": True,
        "prepare_threshold": 0,
        "row_factory": dict_row,
        "options": f"-c search_path={SCHEMA}",
        "application_name": "bench-peers",
    }


def _prepare(url: str) -> str:
    """The schema and the checkpointer's tables (setup() once), emptied; returns the server's
    synchronous_commit."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        row = conn.execute("SHOW synchronous_commit").fetchone()
    with psycopg.connect(url, **_connect_kwargs()) as conn:
        PostgresSaver(conn).setup()
        conn.execute("TRUNCATE checkpoints, checkpoint_blobs, checkpoint_writes")
    return str(row[0]) if row else "unknown"


def _checkpoints(url: str) -> int:
    import psycopg

    with psycopg.connect(url, **_connect_kwargs()) as conn:
        row = conn.execute("SELECT count(*) AS n FROM checkpoints").fetchone()
    return int(row["n"]) if row else 0


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-postgres", "psycopg")
    return {name: version(name) for name in names}


class _Graphs:
    """Processes that each run their share of graphs at once whenever run() says "go"."""

    def __init__(self, url: str, shares: list[int], iterations: int) -> None:
        self.args = (url, iterations)
        self.shares = shares
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        self.iterations = 0  # every iteration run, warm-ups too (checkpoints_per_iteration)

    def __enter__(self) -> _Graphs:
        spawn = multiprocessing.get_context("spawn")
        for share in self.shares:
            mine, theirs = spawn.Pipe()
            process = spawn.Process(target=_serve, args=(theirs, *self.args, share), daemon=True)
            process.start()
            theirs.close()  # ours only: a process that dies is then an EOFError on recv
            self.pipes.append(mine)
            self.processes.append(process)
        self.iterations += sum(self._recv(pipe) for pipe in self.pipes)  # warmed up
        return self

    def run(self) -> tuple[int, float]:
        """All the graphs at once: iterations run, and the seconds from go to the last end."""
        began = time.perf_counter()
        for pipe in self.pipes:
            pipe.send("run")
        done = sum(self._recv(pipe) for pipe in self.pipes)
        elapsed = time.perf_counter() - began
        self.iterations += done
        return done, elapsed

    def __exit__(self, *exc: object) -> None:
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            try:
                pipe.send("stop")
            except OSError:
                pass  # it has died already
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()

    @staticmethod
    def _recv(pipe: Connection) -> int:
        try:
            return int(pipe.recv())
        except EOFError:
            raise RuntimeError("a LangGraph process failed (its traceback is above)") from None


def _serve(pipe: Connection, url: str, iterations: int, graphs: int) -> None:
    """In a process of its own: `graphs` graphs, each with its saver, over one pool; one
    batch to warm up, then one batch each time it is told to run."""
    loop = asyncio.new_event_loop()
    pool, compiled = loop.run_until_complete(_open(url, graphs, iterations))
    try:
        pipe.send(loop.run_until_complete(_batch(compiled, iterations)))
        while pipe.recv() == "run":
            pipe.send(loop.run_until_complete(_batch(compiled, iterations)))
    finally:
        loop.run_until_complete(pool.close())
        loop.close()


async def _open(url: str, graphs: int, iterations: int) -> tuple[Any, list[Any]]:
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
        url, min_size=graphs, max_size=graphs, kwargs=_connect_kwargs(), open=False
    )
    await pool.open(wait=True)
    return pool, [build(AsyncPostgresSaver(pool), iterations) for _ in range(graphs)]


async def _batch(compiled: list[Any], iterations: int) -> int:
    """Every graph once, all at once, each as a new LangGraph thread; the iterations done."""
    start: IterationState = {"iteration": 0, "bids": {}, "results": [], "feedback": ""}
    ends = await asyncio.gather(
        *(
            graph.ainvoke(
                start,
                # 3 steps an iteration; LangGraph stops a graph at 25 steps unless told
                {
                    "configurable": {"thread_id": uuid.uuid4().hex},
                    "recursion_limit": 4 * iterations,
                },
                durability=DURABILITY,
            )
            for graph in compiled
        )
    )
    if any(end["iteration"] != iterations for end in ends):
        raise RuntimeError("a LangGraph run ended before its last iteration")
    return sum(end["iteration"] for end in ends)
