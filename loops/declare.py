"""The Python API that declares what loops exist: domains, agents, validators, tools,
breakers and blueprints, kept in this module's registries.

    from loops.declare import Bid, Exits, Outcome, Phase, Policy, blueprint, domain, python_agent

    domain("healthcare", "Healthcare")

    @python_agent("dosage-calculator")
    class DosageCalculator:
        def bid(self, task): return Bid(confidence=0.9)
        def perform(self, task): return Outcome(output={"dose_mg": ...})

    blueprint(
        "dosage-calculation", kind="micro", domain="healthcare",
        phases=[Phase("compute", task_type="dosage.compute", capabilities=("dosing",))],
        policy=Policy(exits=Exits(quality=("validated",), max_iterations=3)),
    )

Declarations are checked when made (termination, recursion, kinds: CONCEPTS 18, 43, 67) and
mirrored into the database by sync_declarations(), so the console, the admin and the API show
them. Modules named in settings.LOOP_DECLARATIONS are imported when Django starts. What the
declarations hold is defined in loops.specs, what agents exchange with the engine in
loops.messages; a declaration module imports all of it from here, its one entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jsonschema
from django.db import transaction
from django.utils import timezone

from loops import merge
from loops.messages import Bid, Decline, Escalation, Outcome, Spawn, Task, Verdict
from loops.specs import (
    AgentSpec,
    BlueprintSpec,
    BreakerSpec,
    DomainSpec,
    Escalate,
    EscalateTo,
    Exits,
    Phase,
    Policy,
    Remind,
    Retry,
    Rung,
    ladder_problem,
)

# What a declaration module uses: the declaring functions below and the specs and messages.
__all__ = [
    "Bid",
    "Decline",
    "Escalate",
    "EscalateTo",
    "Escalation",
    "Exits",
    "Outcome",
    "Phase",
    "Policy",
    "Remind",
    "Retry",
    "Rung",
    "Spawn",
    "Task",
    "Verdict",
    "agent",
    "blueprint",
    "breaker",
    "domain",
    "python_agent",
    "remote_agent",
    "tool",
    "validator",
]

MAX_STACK_DEPTH = 8  # a hard bound on every stack, whatever a blueprint declares


class DeclarationError(ValueError):
    """A declaration that would let a loop run without bound, or that makes no sense."""


DOMAINS: dict[str, DomainSpec] = {}
AGENTS: dict[tuple[str, str], AgentSpec] = {}
BLUEPRINTS: dict[str, BlueprintSpec] = {}
IMPLEMENTATIONS: dict[str, Callable[[], Any]] = {}
VALIDATORS: dict[str, Callable[[Any, dict[str, Any]], Verdict]] = {}
BREAKERS: dict[str, BreakerSpec] = {}
TOOLS: dict[str, Callable[[Any, Task], Any]] = {}


def domain(slug: str, name: str, description: str = "") -> DomainSpec:
    spec = DomainSpec(slug, name, description)
    DOMAINS[slug] = spec
    return spec


def python_agent(key: str):
    """Class decorator: register an in-process agent implementation under key."""

    def register(cls):
        IMPLEMENTATIONS[key] = cls
        return cls

    return register


def agent(
    domain: str,
    name: str,
    *,
    implementation: str,
    capabilities: tuple[str, ...] = (),
    task_types: tuple[str, ...] = (),
    secret_env: str = "",
) -> AgentSpec:
    """Declare an agent run in the worker. secret_env names the environment variable holding
    its shared secret, needed only if it also calls the API with a token (common.signing)."""
    config = {"secret_env": secret_env} if secret_env else {}
    spec = AgentSpec(
        domain, name, implementation, tuple(capabilities), tuple(task_types), config=config
    )
    AGENTS[(domain, name)] = spec
    return spec


# What each remote adapter cannot work without (loops.agents.http, loops.agents.llm).
_REMOTE_REQUIRED = {
    "http": ("url",),
    "llm": ("base_url", "model"),
    "realm": ("realm", "blueprint"),
    "a2a": ("skill",),
}


def remote_agent(
    domain: str,
    name: str,
    *,
    adapter: Literal["http", "llm", "realm", "a2a"] = "http",
    config: dict[str, Any],
    capabilities: tuple[str, ...] = (),
    task_types: tuple[str, ...] = (),
) -> AgentSpec:
    """Declare an agent this console calls over HTTP: a remote agent with bid and perform
    endpoints, or a model behind an OpenAI-compatible chat-completions server.

    Secrets are better named than written: "secret_env" (http) and "api_key_env" (llm) name
    environment variables read when the call is made.
    """
    if adapter not in _REMOTE_REQUIRED:
        raise DeclarationError(
            f"agent {name!r}: adapter must be http, llm, realm or a2a, not {adapter!r}"
        )
    if missing := [key for key in _REMOTE_REQUIRED[adapter] if not config.get(key)]:
        raise DeclarationError(f"agent {name!r}: an {adapter} agent needs {', '.join(missing)}")
    if adapter == "a2a" and not (config.get("url") or config.get("url_env")):
        raise DeclarationError(f"agent {name!r}: an a2a agent needs url or url_env")
    if adapter == "http" and not (config.get("secret") or config.get("secret_env")):
        raise DeclarationError(f"agent {name!r}: an http agent needs secret or secret_env")
    if config.get("mode", "chat") not in ("chat", "react"):
        raise DeclarationError(f"agent {name!r}: mode must be chat or react")
    steps = config.get("max_steps", 5)
    if config.get("mode") == "react" and not (isinstance(steps, int) and steps >= 1):
        raise DeclarationError(f"agent {name!r}: a react agent needs max_steps ≥ 1")
    spec = AgentSpec(
        domain, name, "", tuple(capabilities), tuple(task_types), adapter, dict(config)
    )
    AGENTS[(domain, name)] = spec
    return spec


def breaker(name: str, *, scope: str, metric: str, threshold: float, **knobs: Any) -> BreakerSpec:
    kind = scope.split(":", 1)[0]
    if kind not in ("agent", "blueprint", "domain") or ":" not in scope:
        raise DeclarationError(f"breaker {name!r}: scope must be agent:, blueprint: or domain:")
    metrics = ("consecutive_failures", "error_rate", "cost_window", "latency", "reported_value")
    if metric not in metrics:
        raise DeclarationError(f"breaker {name!r}: metric must be one of {', '.join(metrics)}")
    if metric == "reported_value" and not knobs.get("value_key"):
        raise DeclarationError(f"breaker {name!r}: a reported_value breaker needs value_key")
    if metric == "error_rate" and not 0 < threshold <= 1:
        raise DeclarationError(f"breaker {name!r}: an error rate threshold is in (0, 1]")
    spec = BreakerSpec(name, scope, metric, threshold, **knobs)
    BREAKERS[name] = spec
    return spec


def tool(name: str):
    """Function decorator: a tool that ReAct agents (CONCEPTS 61) listing it in their config's
    "tools" may use, fn(input, task) -> an observation (JSON-able). Its docstring's first line
    is what the model is told it does."""

    def register(fn):
        TOOLS[name] = fn
        return fn

    return register


def validator(name: str):
    """Function decorator: fn(merged_value, run_context) -> Verdict."""

    def register(fn):
        VALIDATORS[name] = fn
        return fn

    return register


def blueprint(name: str, **fields: Any) -> BlueprintSpec:
    """Declare a loop blueprint; raises DeclarationError if it could run without bound."""
    fields["phases"] = tuple(fields.get("phases", ()))
    for key in ("validators", "children"):
        fields[key] = tuple(fields.get(key, ()))
    spec = BlueprintSpec(name=name, **fields)
    _check(spec)
    BLUEPRINTS[name] = spec
    for child in spec.children:
        if REMOTE_SEPARATOR in child:
            _remote_frame(child, spec.domain)
    return spec


REMOTE_SEPARATOR = ":"


def _remote_frame(name: str, domain: str) -> None:
    """A child "<realm>:<blueprint>" is a remote frame: the peer realm runs the blueprint
    (realms.frames) and the frame waits for its answer. Its spec has no phases of its own;
    it is bounded by its deadline in the parent and by the grants of both realms."""
    realm, _, remote = name.partition(REMOTE_SEPARATOR)
    if not realm or not remote:
        raise DeclarationError(f"remote child {name!r}: write it as <realm>:<blueprint>")
    BLUEPRINTS.setdefault(
        name,
        BlueprintSpec(
            name=name,
            kind="sub",
            domain=domain,
            phases=(),
            policy=Policy(exits=Exits()),
            remote=(realm, remote),
            description=f"{remote} in realm {realm}",
        ),
    )


def _check(spec: BlueprintSpec) -> None:
    def reject(why: str) -> None:
        raise DeclarationError(f"blueprint {spec.name!r}: {why}")

    exits = spec.policy.exits
    if spec.kind not in ("main", "sub", "micro"):
        reject(f"kind must be main, sub or micro, not {spec.kind!r}")
    if spec.kind == "micro" and spec.children:
        reject("a micro-loop calls no children")
    if not spec.phases:
        reject("declares no phases")
    if not exits.quality:
        reject("needs at least one quality exit")
    if exits.max_iterations is None and exits.deadline_s is None and exits.budget is None:
        reject("needs a resource bound: max_iterations, deadline_s or budget")
    if spec.policy.on_budget not in ("exhaust", "ask"):
        reject(f"on_budget must be exhaust or ask, not {spec.policy.on_budget!r}")
    if "score_target" in exits.quality and exits.score_target is None:
        reject("the score_target exit needs Exits(score_target=…)")
    if spec.name in spec.children and spec.max_depth is None:
        reject("spawns itself without max_depth, so it could recurse without bound")
    if spec.max_depth is not None and not 0 < spec.max_depth <= MAX_STACK_DEPTH:
        reject(f"max_depth must be 1..{MAX_STACK_DEPTH}")
    if spec.merge not in merge.STRATEGIES:
        reject(f"unknown merge strategy {spec.merge!r}")
    if spec.selection not in ("all", "best", "top_k", "thompson"):
        reject(f"selection must be all, best, top_k or thompson, not {spec.selection!r}")
    if spec.selection == "top_k" and not spec.top_k:
        reject("top_k selection needs top_k ≥ 1")
    if spec.quorum < 0:
        reject("quorum must be ≥ 0")
    asks = spec.policy.escalation
    if not 1 <= asks.approvals <= 20 or (
        asks.approvers_from and asks.approvals > len(asks.approvers_from)
    ):
        reject("Escalate(approvals=…) must be 1..20, and no more than the approvers_from groups")
    names = [phase.name for phase in spec.phases]
    for index, phase in enumerate(spec.phases):
        if phase.audience_from and phase.audience_from not in names[:index]:
            reject(f"phase {phase.name!r} takes its audience from no earlier phase")
        if phase.output_schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(phase.output_schema)
            except jsonschema.SchemaError as exc:
                reject(f"phase {phase.name!r} has an invalid output_schema: {exc.message}")
        if bool(phase.task_type) == bool(phase.call):
            reject(f"phase {phase.name!r} must either broadcast a task_type or call children")
        if phase.beam and (len(phase.call) != 1 or index == 0 or spec.merge != "rank"):
            reject(
                f"phase {phase.name!r}: a beam calls one child and follows a phase whose "
                "results the blueprint merges with rank"
            )
        if undeclared := set(phase.call) - set(spec.children):
            reject(f"phase {phase.name!r} calls {sorted(undeclared)}, not among its children")
    named = set(spec.validators).union(*(phase.validators for phase in spec.phases))
    # "agent:<name>" names a validator agent of the domain, checked when it runs.
    named = {n for n in named if not n.startswith("agent:")}
    if unknown := named - set(VALIDATORS):
        reject(f"unknown validators {sorted(unknown)}")
    if problem := ladder_problem(spec.policy.escalation):
        reject(problem)


def check_graph() -> None:
    """Once every declaration is loaded: domains and children exist, and no cycle lacks a
    depth bound."""
    owned: list[AgentSpec | BlueprintSpec] = [*BLUEPRINTS.values(), *AGENTS.values()]
    for item in owned:
        if item.domain not in DOMAINS:
            raise DeclarationError(f"{item.name!r} belongs to an undeclared domain {item.domain!r}")
    for bp in BLUEPRINTS.values():
        for child in bp.children:
            if child not in BLUEPRINTS:
                raise DeclarationError(f"blueprint {bp.name!r}: unknown child {child!r}")
    for start in BLUEPRINTS.values():
        stack: list[tuple[str, tuple[str, ...]]] = [(start.name, (start.name,))]
        seen: set[str] = set()
        while stack:
            name, path = stack.pop()
            for child in BLUEPRINTS[name].children:
                if child == start.name and all(BLUEPRINTS[n].max_depth is None for n in path):
                    cycle = " → ".join((*path, child))
                    raise DeclarationError(f"{cycle} can recurse without bound: set max_depth")
                if child not in seen:
                    seen.add(child)
                    stack.append((child, (*path, child)))


@transaction.atomic
def sync_declarations() -> None:
    """Mirror the declarations into the database (idempotent upserts)."""
    from loops.models import Agent, Blueprint, Domain

    check_graph()
    for d in DOMAINS.values():
        Domain.objects.update_or_create(
            slug=d.slug, defaults={"name": d.name, "description": d.description}
        )
    domains = {d.slug: d for d in Domain.objects.all()}
    for a in AGENTS.values():
        python = a.adapter == "python"
        Agent.objects.update_or_create(
            domain=domains[a.domain],
            name=a.name,
            defaults={
                "adapter": a.adapter,
                "config": {"implementation": a.implementation, **a.config} if python else a.config,
                "capabilities": list(a.capabilities),
                "task_types": list(a.task_types),
            },
        )
    for bp in BLUEPRINTS.values():
        Blueprint.objects.update_or_create(
            name=bp.name,
            defaults={
                "kind": bp.kind,
                "domain": domains[bp.domain],
                "description": bp.description,
                "spec": bp.as_json(),
                "updated_at": timezone.now(),
            },
        )
