"""What the education demo computes: learners and their answers, skill estimates (an ability
on the Elo scale and a Beta mastery posterior, per topic), a learning path in the zone of
proximal development, and content picked from a catalogue. Pure functions without Django.
"""

from __future__ import annotations

import math
import random
from typing import Any

TOPICS = ("fractions", "decimals", "ratios", "equations", "geometry", "statistics")
FORMATS = ("video", "exercise", "reading", "game")
PRIOR_SD = 200  # the spread of abilities within a grade, on the Elo scale
TARGET_SUCCESS = 0.7  # practise where the learner succeeds about 70 % of the time
AT_RISK_GAP = 250  # this far below the grade's typical rating…
AT_RISK_MASTERY = 0.35  # …and with this little mastery, a teacher should look
# What a learner's path may cost: the learning-management system bills each catalogue lookup
# (0.001) and, on its premium plan, each path published (PREMIUM_PUBLISH_COST). A premium
# learner's path is over it before it is published, and the loop asks a person whether to
# spend more (Policy(on_budget="ask"), issue 18).
PATH_BUDGET = 0.0015
PREMIUM_PUBLISH_COST = 0.001


def typical_rating(grade: int) -> float:
    """The Elo rating of a typical learner of the grade (items are rated on the same scale)."""
    return 900 + 60 * (grade - 5)


def p_correct(skill: float, difficulty: float) -> float:
    return 1 / (1 + 10 ** ((difficulty - skill) / 400))


def generate_learner(rng: random.Random, *, behind: bool) -> dict[str, Any]:
    """A learner with a history of answers drawn from a hidden skill per topic. Behind, the
    skill lies far under the grade's and the answers show it (a case for a teacher); else
    the answers never look like that (an unlucky history is drawn again)."""
    grade = rng.randint(5, 8)
    typical = typical_rating(grade)
    learner: dict[str, Any] = {
        "id": f"L-{rng.randrange(10000, 99999)}",
        "grade": grade,
        "subject": "mathematics",
        "minutes_per_week": rng.choice((60, 90, 120, 150)),
    }
    for _ in range(20):
        offset = -rng.uniform(380, 480) if behind else rng.gauss(0, 70)
        skill = {topic: typical + offset + rng.gauss(0, 60) for topic in TOPICS}
        answers = []
        for n in range(rng.randint(12, 24)):
            topic = rng.choice(TOPICS)
            difficulty = round(rng.gauss(typical, 120))
            correct = rng.random() < p_correct(skill[topic], difficulty)
            answers.append(
                {"item": f"Q{n + 1}", "topic": topic, "difficulty": difficulty, "correct": correct}
            )
        learner["answers"] = answers
        if estimate(learner)["at_risk"] == behind:
            break
    return learner


def estimate(learner: dict[str, Any]) -> dict[str, Any]:
    """Both estimates and the plan they lead to, as the loops compute them."""
    estimates = {"ability": abilities(learner["answers"], learner["grade"])}
    estimates["mastery"] = mastery(learner["answers"])
    return plan_path(learner, estimates)


# --- Skill estimates (the skill-assessment micro-loop) -------------------------------------


def ability(answers: list[dict[str, Any]], prior: float) -> float:
    """The most probable ability on the Elo scale (a Rasch model with item difficulties,
    and a normal prior around the grade's typical rating), by Newton's method.

    It solves c·Σ(right - P(θ, d)) = (θ - prior) / PRIOR_SD², whose left side falls and
    right side rises with θ: so one more right answer always gives a higher ability.
    """
    c = math.log(10) / 400
    right = sum(1 for a in answers if a["correct"])
    theta = prior
    for _ in range(50):
        p = [p_correct(theta, a["difficulty"]) for a in answers]
        gradient = c * (right - sum(p)) - (theta - prior) / PRIOR_SD**2
        curvature = c * c * sum(q * (1 - q) for q in p) + 1 / PRIOR_SD**2
        step = gradient / curvature
        theta += step
        if abs(step) < 0.01:
            break
    return round(theta, 1)


def abilities(answers: list[dict[str, Any]], grade: int) -> dict[str, Any]:
    """The ability overall and per topic answered."""
    prior = typical_rating(grade)
    topics = sorted({a["topic"] for a in answers})
    return {
        "overall": ability(answers, prior),
        "topics": {t: ability([a for a in answers if a["topic"] == t], prior) for t in topics},
    }


def mastery(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The posterior mean of a Beta(1, 1) prior per topic and overall: (1 + right) / (2 + n)."""

    def beta(items: list[dict[str, Any]]) -> dict[str, Any]:
        right = sum(1 for a in items if a["correct"])
        return {"p": round((1 + right) / (2 + len(items)), 3), "right": right, "n": len(items)}

    topics = sorted({a["topic"] for a in answers})
    return {
        "overall": beta(answers),
        "topics": {t: beta([a for a in answers if a["topic"] == t]) for t in topics},
    }


def estimate_problems(value: Any) -> list[str]:
    """Why merged skill estimates cannot be used (the assessment validator's feedback)."""
    if not isinstance(value, dict) or "ability" not in value or "mastery" not in value:
        return ["both an ability and a mastery estimate are needed"]
    problems = []
    ratings = [value["ability"]["overall"], *value["ability"]["topics"].values()]
    if not all(isinstance(r, int | float) and math.isfinite(r) for r in ratings):
        problems.append("an ability is not a finite number")
    shares = [value["mastery"]["overall"], *value["mastery"]["topics"].values()]
    if not all(0 <= m["p"] <= 1 for m in shares):
        problems.append("a mastery estimate lies outside 0..1")
    return problems


# --- The path (the personalization-engine sub-loop) ---------------------------------------


def plan_path(learner: dict[str, Any], estimates: dict[str, Any]) -> dict[str, Any]:
    """Up to three focus topics, weakest first, each with the difficulty at which the learner
    succeeds TARGET_SUCCESS of the time; and whether the learner is at risk."""
    typical = typical_rating(learner["grade"])
    ratings, shares = estimates["ability"]["topics"], estimates["mastery"]["topics"]
    prior = {"p": 0.5, "right": 0, "n": 0}
    ranked = sorted(TOPICS, key=lambda t: (shares.get(t, prior)["p"], ratings.get(t, typical)))
    offset = 400 * math.log10(TARGET_SUCCESS / (1 - TARGET_SUCCESS))
    focus = [
        {
            "topic": t,
            "mastery": shares.get(t, prior)["p"],
            "ability": ratings.get(t, typical),
            "target_difficulty": round(ratings.get(t, typical) - offset),
        }
        for t in ranked[:3]
    ]
    overall = estimates["mastery"]["overall"]
    at_risk = (
        estimates["ability"]["overall"] < typical - AT_RISK_GAP
        and overall["p"] < AT_RISK_MASTERY
        and overall["n"] >= 10
    )
    return {
        "learner": learner["id"],
        "grade": learner["grade"],
        "minutes_per_week": learner["minutes_per_week"],
        "focus": focus,
        "at_risk": at_risk,
    }


# --- Content (the content-curator sub-loop) and the published path ------------------------


def generate_catalogue(rng: random.Random, grade: int, size: int = 60) -> list[dict[str, Any]]:
    typical = typical_rating(grade)
    return [
        {
            "id": f"R-{n:03d}",
            "topic": (topic := rng.choice(TOPICS)),
            "format": (kind := rng.choice(FORMATS)),
            "title": f"{topic.capitalize()} {kind} {n}",
            "difficulty": round(rng.gauss(typical, 220)),
            "minutes": rng.choice((5, 10, 15, 20, 30, 40)),
            "rating": round(rng.uniform(2.5, 5.0), 1),
            "added_days_ago": rng.randint(0, 400),
        }
        for n in range(1, size + 1)
    ]


def curate(plan: dict[str, Any], catalogue: list[dict[str, Any]], per_topic: int = 2) -> list:
    """For each focus topic, the best resources: well rated and close to the target."""
    picked = []
    for focus in plan["focus"]:
        target = focus["target_difficulty"]
        scored = [
            {
                **item,
                "score": round(
                    item["rating"] / 5 * math.exp(-(((item["difficulty"] - target) / 150) ** 2)), 3
                ),
            }
            for item in catalogue
            if item["topic"] == focus["topic"]
        ]
        picked += sorted(scored, key=lambda i: (-i["score"], i["id"]))[:per_topic]
    return picked


def path_problems(path: Any) -> list[str]:
    """Why a published path cannot go out (the publication validator's feedback)."""
    if not isinstance(path, dict) or not path.get("resources"):
        return ["the path has no resources"]
    minutes = sum(r["minutes"] for r in path["resources"])
    if minutes > path["minutes_per_week"]:
        return [
            f"the path takes {minutes} min, over the learner's {path['minutes_per_week']} min "
            "a week: drop the lowest-scored resources"
        ]
    return []


def publish(plan: dict[str, Any], resources: list[dict[str, Any]], *, trim: bool) -> dict:
    """The learning path: every curated resource, weakest topic first; with trim (after the
    validator said it is too long), the lowest-scored go until it fits the week."""
    order = {f["topic"]: n for n, f in enumerate(plan["focus"])}
    chosen = sorted(resources, key=lambda r: (order.get(r["topic"], 99), -r["score"]))
    if trim:
        while len(chosen) > 1 and sum(r["minutes"] for r in chosen) > plan["minutes_per_week"]:
            chosen.remove(min(chosen, key=lambda r: r["score"]))
    return {
        "learner": plan["learner"],
        "minutes_per_week": plan["minutes_per_week"],
        "resources": [
            {k: r[k] for k in ("id", "title", "topic", "minutes", "score")} for r in chosen
        ],
        "minutes": sum(r["minutes"] for r in chosen),
    }
