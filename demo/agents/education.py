"""The education domain's agents: the learner's profile, ability and mastery estimates, the
learning path, curation and publishing, computed by demo.education.
"""

from __future__ import annotations

from demo import education, faults
from demo.agents.base import DemoAgent, given, phase_results
from loops.declare import python_agent
from loops.messages import Bid, Decline, Escalation, Outcome, Task


@python_agent("demo.learner-profiler")
class LearnerProfiler(DemoAgent):
    confidence = 0.9

    def work(self, task: Task) -> Outcome:
        rng = faults.rng_for(task, "learner")
        learner = education.generate_learner(rng, behind=faults.hazard(rng))
        # A school on the LMS's premium plan pays for each path published (its own draw, so
        # the learner's answers stay those of the seed).
        premium = faults.hazard(faults.rng_for(task, "licence"))
        learner["lms_plan"] = "premium" if premium else "standard"
        learner.update(given(task).get("learner", {}))
        return Outcome(output=learner, rationale=f"{len(learner['answers'])} answers so far")


@python_agent("demo.ability-estimator")
class AbilityEstimator(DemoAgent):
    """An ability per topic on the Elo scale (Rasch, MAP); surer with more answers."""

    def bid(self, task: Task) -> Bid | Decline | None:
        n = len(given(task).get("answers", []))
        return Bid(confidence=round(n / (n + 5), 2)) if n else Decline("no answers yet")

    def work(self, task: Task) -> Outcome:
        learner = given(task)
        return Outcome(
            output={"ability": education.abilities(learner["answers"], learner["grade"])}
        )


@python_agent("demo.mastery-estimator")
class MasteryEstimator(DemoAgent):
    confidence = 0.75

    def work(self, task: Task) -> Outcome:
        return Outcome(output={"mastery": education.mastery(given(task)["answers"])})


@python_agent("demo.path-planner")
class PathPlanner(DemoAgent):
    """Focus topics and target difficulty; a learner far behind goes to a teacher."""

    confidence = 0.85

    def work(self, task: Task) -> Outcome:
        estimates = phase_results(task)["assess"]["skill-assessment"]
        plan = education.plan_path(given(task), estimates)
        if not plan["at_risk"]:
            return Outcome(output={**plan, "referral": None})
        if said := faults.rejected(task):
            return Outcome(output={**plan, "referral": None, "override": said})
        overall = estimates["mastery"]["overall"]
        return Outcome(
            output={**plan, "referral": "teacher intervention"},
            escalate=Escalation(
                reason=f"learner {plan['learner']} is far behind grade {plan['grade']} "
                f"({overall['right']} of {overall['n']} right)",
                severity="warning",
                rationale="a teacher should decide on an intervention before the path goes out",
            ),
        )


class Curator(DemoAgent):
    newest_missing_days = 0  # the cache has not seen what was added since

    def work(self, task: Task) -> Outcome:
        plan = given(task)["personalization-engine"]
        catalogue = education.generate_catalogue(faults.rng_for(task, "catalogue"), plan["grade"])
        catalogue = [c for c in catalogue if c["added_days_ago"] >= self.newest_missing_days]
        resources = education.curate(plan, catalogue)
        return Outcome(
            output={"resources": resources, "source": self.system or "cache"}, cost=self.cost
        )


@python_agent("demo.lms-connector")
class LmsConnector(Curator):
    confidence, system, cost = 0.85, "learning-management-system", 0.001


@python_agent("demo.catalogue-cache")
class CatalogueCache(Curator):
    confidence, newest_missing_days = 0.6, 60


@python_agent("demo.path-publisher")
class PathPublisher(DemoAgent):
    """Publishes every curated resource; once told it is too long, trims to the week.
    Publishing to a premium LMS is billed, which the loop's budget may not cover."""

    confidence = 0.9

    def bid(self, task: Task) -> Bid | Decline | None:
        return Bid(confidence=self.confidence, est_cost=publishing_cost(task))

    def work(self, task: Task) -> Outcome:
        plan = phase_results(task)["personalize"]["personalization-engine"]
        resources = phase_results(task)["curate"]["content-curator"]["resources"]
        trim = any("drop the lowest-scored" in line for line in task.feedback)
        path = education.publish(plan, resources, trim=trim)
        return Outcome(output=path, cost=publishing_cost(task))


def publishing_cost(task: Task) -> float:
    learner = phase_results(task).get("enrol") or {}
    premium = learner.get("lms_plan") == "premium"
    return education.PREMIUM_PUBLISH_COST if premium else 0.0
