"""Loops the tests run, on a real worker too (tests.settings names this module).

A three-level stack: lab-main plans, then calls lab-sub; lab-sub calls lab-micro to square a
number, then summarises. Agents compute real (small) things from their task.
"""

from __future__ import annotations

import time

from loops.declare import agent, blueprint, domain, python_agent, validator
from loops.messages import Bid, Decline, Outcome, Spawn, Verdict
from loops.specs import Exits, Phase, Policy, Retry

domain("lab", "Laboratory", "Loops the test suite runs.")


@python_agent("tests.planner")
class Planner:
    def bid(self, task):
        return Bid(confidence=0.8, est_cost=0.01)

    def perform(self, task):
        return Outcome(output={"x": task.context["input"].get("x", 3)}, cost=0.01, tokens=5)


@python_agent("tests.squarer")
class Squarer:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        x = task.context["input"]["x"]
        return Outcome(output=x * x, tokens=3)


@python_agent("tests.summariser")
class Summariser:
    def bid(self, task):
        return Bid(confidence=0.7)

    def perform(self, task):
        square = task.context["phases"]["measure"]["lab-micro"]
        return Outcome(output={"square": square, "summary": f"the square is {square}"}, tokens=7)


@python_agent("tests.slow")
class Slow:
    """Takes a while, so a worker can be killed while it works."""

    def bid(self, task):
        return Bid(confidence=0.6)

    def perform(self, task):
        time.sleep(task.payload.get("seconds", 0.3))
        return Outcome(output={"done": True})


# planner and squarer also call the API in tests, signing with $TEST_AGENT_SECRET.
agent(
    "lab",
    "planner",
    implementation="tests.planner",
    capabilities=("plan",),
    secret_env="TEST_AGENT_SECRET",
)
agent(
    "lab",
    "squarer",
    implementation="tests.squarer",
    capabilities=("arithmetic",),
    secret_env="TEST_AGENT_SECRET",
)
agent("lab", "summariser", implementation="tests.summariser", capabilities=("writing",))
agent("lab", "slowpoke", implementation="tests.slow", capabilities=("patience",))


@validator("tests.has-summary")
def has_summary(value, context):
    ok = isinstance(value, dict) and "summary" in value
    return Verdict(ok=ok, score=1.0 if ok else 0.0, feedback="" if ok else "no summary")


bounded = Policy(exits=Exits(quality=("validated",), max_iterations=5, deadline_s=120))

blueprint(
    "lab-micro",
    kind="micro",
    domain="lab",
    policy=bounded,
    phases=[Phase("square", task_type="lab.square", capabilities=("arithmetic",))],
    bid_window_ms=500,
    gather_deadline_ms=5000,
)
blueprint(
    "lab-sub",
    kind="sub",
    domain="lab",
    policy=bounded,
    children=("lab-micro",),
    phases=[
        Phase("measure", call=("lab-micro",)),
        Phase("summarise", task_type="lab.summarise", capabilities=("writing",)),
    ],
    validators=("tests.has-summary",),
)
blueprint(
    "lab-main",
    kind="main",
    domain="lab",
    children=("lab-sub",),
    policy=Policy(exits=Exits(quality=("validated",), max_iterations=10, budget=1.0)),
    phases=[
        Phase("plan", task_type="lab.plan", capabilities=("plan",)),
        Phase("delegate", call=("lab-sub",)),
    ],
)
blueprint(
    "lab-slow",
    kind="main",
    domain="lab",
    policy=Policy(
        exits=Exits(quality=("validated",), max_iterations=3), retry=Retry(max_attempts=1)
    ),
    phases=[
        Phase("wait-1", task_type="lab.wait", payload={"seconds": 0.3}, capabilities=("patience",)),
        Phase("wait-2", task_type="lab.wait", payload={"seconds": 0.3}, capabilities=("patience",)),
    ],
)


# --- The arena: small agents with fixed answers, for the engine's unit tests ------------

domain("arena", "Arena", "Agents with fixed answers, for the engine's own tests.")


def _answering(value, confidence, est_cost=0.0):
    class Answering:
        def bid(self, task):
            return Bid(confidence=confidence, est_cost=est_cost)

        def perform(self, task):
            return Outcome(
                output={"value": value, "feedback_seen": list(task.feedback)}, cost=est_cost
            )

    return Answering


python_agent("arena.alpha")(_answering(42, 0.9))
python_agent("arena.beta")(_answering(41, 0.5))
python_agent("arena.gamma")(_answering(42, 0.7))


@python_agent("arena.mute")
class Mute:
    """Never answers the broadcast in time (a remote agent that stays silent)."""

    def bid(self, task):
        return None


@python_agent("arena.refuser")
class Refuser:
    def bid(self, task):
        return Decline("not my field")


@python_agent("arena.spawner")
class Spawner:
    def bid(self, task):
        return Bid(confidence=0.8, est_cost=task.payload.get("cost", 0.0))

    def perform(self, task):
        wanted = task.payload.get("spawn", ["arena-child"])
        spawns = tuple(Spawn(name) for name in wanted)
        return Outcome(output={"asked": wanted}, cost=task.payload.get("cost", 0.0), spawn=spawns)


agent("arena", "alpha", implementation="arena.alpha", capabilities=("answer", "wait"))
agent("arena", "beta", implementation="arena.beta", capabilities=("answer",))
agent("arena", "gamma", implementation="arena.gamma", capabilities=("answer",))
agent("arena", "mute", implementation="arena.mute", capabilities=("wait",))
agent("arena", "refuser", implementation="arena.refuser", capabilities=("refuse",))
agent("arena", "spawner", implementation="arena.spawner", capabilities=("spawn",))
agent("arena", "unskilled", implementation="arena.alpha", capabilities=())


@validator("tests.saw-feedback")
def saw_feedback(value, context):
    ok = bool(value.get("feedback_seen"))
    return Verdict(ok=ok, feedback="" if ok else "try again, and read this feedback")


def _main(name, capabilities, **fields):
    fields.setdefault("policy", Policy(exits=Exits(quality=("validated",), max_iterations=3)))
    ask = Phase(
        "ask", task_type="arena.ask", capabilities=capabilities, payload=fields.pop("payload", {})
    )
    fields.setdefault("phases", [ask])
    return blueprint(name, kind="main", domain="arena", **fields)


_main("arena-all", ("answer",), selection="all", merge="vote")
_main("arena-top2", ("answer",), selection="top_k", top_k=2)
_main("arena-thompson", ("answer",), selection="thompson", top_k=1)


@python_agent("arena.checker")
class Checker:
    """Works like the others, and also checks merged results (a validator agent)."""

    def bid(self, task):
        return Bid(confidence=0.6)

    def perform(self, task):
        return Outcome(output={"value": 42})

    def validate(self, value, context):
        return Verdict(ok=True, score=0.5, feedback="checked")


agent("arena", "peer", implementation="arena.alpha", capabilities=("peer",))
agent("arena", "maker-checker", implementation="arena.checker", capabilities=("peer",))
agent("arena", "outside-checker", implementation="arena.checker", capabilities=())
_main(
    "arena-peer-review",
    ("peer",),
    merge="collect_all",
    validators=("agent:maker-checker", "agent:outside-checker"),
)
_main("arena-window", ("wait",), bid_window_ms=2000)
_main(
    "arena-quorum-fail",
    ("refuse",),
    policy=Policy(exits=Exits(max_iterations=3), on_insufficient_bids="fail"),
)
_main("arena-quorum-retry", ("refuse",), policy=Policy(exits=Exits(max_iterations=2)))
_main("arena-feedback", ("answer",), selection="best", validators=("tests.saw-feedback",))
_main(
    "arena-stubborn",
    ("answer",),
    selection="best",
    validators=("tests.has-summary",),
    policy=Policy(exits=Exits(max_iterations=5), validation_rounds=2),
)
_main(
    "arena-spawn",
    ("spawn",),
    children=("arena-child",),
    payload={"spawn": ["arena-child", "lab-micro"]},
)
_main(
    "arena-budget",
    ("spawn",),
    children=("arena-child",),
    payload={"spawn": ["arena-child"], "cost": 0.5},
    policy=Policy(exits=Exits(quality=("validated",), max_iterations=3, budget=0.5)),
)
blueprint(
    "arena-child",
    kind="micro",
    domain="arena",
    policy=Policy(exits=Exits(quality=("validated",), max_iterations=2, budget=1.0)),
    phases=[Phase("ask", task_type="arena.ask", capabilities=("answer",))],
    selection="best",
)


# --- More arena loops: late contributions, the four-loop conversation, exits ------------


@python_agent("arena.sleepy")
class Sleepy:
    """Answers after the gather deadline of arena-late."""

    def bid(self, task):
        return Bid(confidence=0.95)

    def perform(self, task):
        time.sleep(0.3)
        return Outcome(output={"value": "late"})


@python_agent("arena.intent")
class IntentReader:
    def bid(self, task):
        return Bid(confidence=0.6)

    def perform(self, task):
        text = task.context["input"].get("text", "")
        return Outcome(output={"intent": "dose" if "mg" in text else "other", "confidence": 0.6})


@python_agent("arena.formatter")
class Formatter:
    """Leaves out the required field until a validator has complained once."""

    def bid(self, task):
        return Bid(confidence=0.7)

    def perform(self, task):
        answer = {"text": "formatted"}
        return Outcome(output={**answer, "format": "plain"} if task.feedback else answer)


@python_agent("arena.scored")
class Scored:
    """Its answers score 0.50, 0.51, 0.51, 0.51, …: improvement stalls (CONCEPTS 68)."""

    SCORES = (0.50, 0.51, 0.51, 0.51, 0.51, 0.51)

    def bid(self, task):
        return Bid(confidence=0.5)

    def perform(self, task):
        return Outcome(output={"score": self.SCORES[task.iteration - 1]})


@python_agent("arena.spender")
class Spender:
    def bid(self, task):
        return Bid(confidence=0.5, est_cost=0.4)

    def perform(self, task):
        return Outcome(output={"spent": 0.4}, cost=0.4)


agent("arena", "sleepy", implementation="arena.sleepy", capabilities=("late",))
agent("arena", "quick", implementation="arena.alpha", capabilities=("late",))
agent("arena", "intent", implementation="arena.intent", capabilities=("intent",))
agent("arena", "context", implementation="arena.alpha", capabilities=("converse",))
agent("arena", "doer", implementation="arena.gamma", capabilities=("converse",))
agent("arena", "formatter", implementation="arena.formatter", capabilities=("format",))
agent("arena", "scored", implementation="arena.scored", capabilities=("score",))
agent("arena", "spender", implementation="arena.spender", capabilities=("spend",))


@validator("tests.score")
def score(value, context):
    """Rejects every round and reports the answer's own score."""
    return Verdict(ok=False, score=value["score"], feedback="not yet")


@validator("tests.score-pass")
def score_pass(value, context):
    return Verdict(ok=True, score=value["score"])


_main("arena-late", ("late",), gather_deadline_ms=150)
_main(
    "arena-converse",
    ("converse",),
    phases=[
        # IN: every agent reads the intent; the most confident reading wins (CONCEPTS 27).
        Phase(
            "in",
            task_type="c.intent",
            capabilities=("intent",),
            output_schema={
                "type": "object",
                "required": ["intent", "confidence"],
                "properties": {"intent": {"type": "string"}, "confidence": {"type": "number"}},
            },
        ),
        # CONTEXT: bids on handling it; DO: only the CONTEXT winners act (CONCEPTS 28, 29).
        Phase("context", task_type="c.context", capabilities=("converse",)),
        Phase("do", task_type="c.do", capabilities=("converse",), audience_from="context"),
        # OUT: the answer must match the output schema, or the round repeats (CONCEPTS 30).
        Phase(
            "out",
            task_type="c.format",
            capabilities=("format",),
            output_schema={
                "type": "object",
                "required": ["text", "format"],
            },
        ),
    ],
    selection="top_k",
    top_k=1,
    policy=Policy(exits=Exits(quality=("validated",), max_iterations=8)),
)
_main(
    "arena-no-progress",
    ("score",),
    validators=("tests.score",),
    policy=Policy(exits=Exits(max_iterations=6, no_progress=(0.02, 2)), validation_rounds=6),
)
_main(
    "arena-score-target",
    ("score",),
    validators=("tests.score-pass",),
    policy=Policy(exits=Exits(quality=("score_target",), score_target=0.5, max_iterations=3)),
)
_main(
    "arena-spend",
    ("spend",),
    validators=("tests.saw-feedback",),
    policy=Policy(exits=Exits(max_iterations=10, budget=1.0), validation_rounds=10),
)
_main("arena-remote", ("remote",), bid_window_ms=1000)
_main(
    "arena-recursive",
    ("spawn",),
    children=("arena-recursive",),
    max_depth=1,
    payload={"spawn": ["arena-recursive"]},
)


# --- Fan-out: children of one parent run at once, writing to one trace (CONCEPTS 52) -------

for _n in range(1, 5):
    blueprint(
        f"lab-leaf-{_n}",
        kind="micro",
        domain="lab",
        policy=bounded,
        phases=[
            Phase(
                "wait-1",
                task_type="lab.wait",
                payload={"seconds": 0.05},
                capabilities=("patience",),
            ),
            Phase(
                "wait-2",
                task_type="lab.wait",
                payload={"seconds": 0.05},
                capabilities=("patience",),
            ),
        ],
    )
_leaves = tuple(f"lab-leaf-{n}" for n in range(1, 5))
blueprint(
    "lab-fanout",
    kind="main",
    domain="lab",
    children=_leaves,
    policy=bounded,
    phases=[Phase("fan-out", call=_leaves)],
)


# Tree of Thoughts (CONCEPTS 62): three thinkers of different quality, a beam of one, two
# levels of expansion below the root.
def _thinker(score):
    class Thinker:
        def bid(self, task):
            return Bid(confidence=0.5)

        def perform(self, task):
            return Outcome(
                output={"idea": f"{score} after {task.context['input']}", "score": score}
            )

    return Thinker


for _name, _score in (("deep", 0.9), ("fair", 0.6), ("shallow", 0.2)):
    python_agent(f"arena.thinker-{_name}")(_thinker(_score))
    agent(
        "arena",
        f"thinker-{_name}",
        implementation=f"arena.thinker-{_name}",
        capabilities=("think",),
    )

blueprint(
    "arena-tot",
    kind="main",
    domain="arena",
    phases=[
        Phase("think", task_type="arena.think", capabilities=("think",)),
        Phase("expand", call=("arena-tot",), beam=1),
    ],
    children=("arena-tot",),
    max_depth=2,
    merge="rank",
    policy=Policy(exits=Exits(max_iterations=4)),
)


# --- The tally: the benchmark's iteration (bench/declarations.py), for counting statements --

domain("tally", "Tally", "Three no-op agents and a loop that iterates until its bound.")


@python_agent("tally.noop")
class TallyNoOp:
    def bid(self, task):
        return Bid(confidence=0.5)

    def perform(self, task):
        return Outcome(output=None)


for _name in ("noop-1", "noop-2", "noop-3"):
    agent("tally", _name, implementation="tally.noop", capabilities=("noop",))


@validator("tally.never")
def never(value, context):
    """Reject every round, so a run iterates until its max_iterations."""
    return Verdict(ok=False, feedback="again")


blueprint(
    "tally-iterate",
    kind="main",
    domain="tally",
    selection="all",
    merge="collect_all",
    phases=[Phase("noop", task_type="tally.noop", capabilities=("noop",))],
    validators=("tally.never",),
    policy=Policy(exits=Exits(max_iterations=10), validation_rounds=11),
)
