"""Helpers every part of the benchmarks shares: the admin they act as, waits, summaries.

A leaf of the bench package: it imports no other bench module, so that the parts (core,
oversight, push, fanout, peers) and bench.__main__, which runs them, all import it and not
each other. Django is imported inside the functions: they run after django.setup()."""

from __future__ import annotations

import statistics
import time
import urllib.request
from collections.abc import Callable
from typing import Any

REPEATS = 5


def admin_user() -> Any:
    """The superuser the benchmarks decide, halt and sign in as."""
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench-admin")
    user.is_superuser = True
    user.save()
    return user


def session_key(user: Any) -> str:
    """A signed-in session for the benchmark's pages, as a login would make it."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    # The backend that loads users: the first one, axes, only refuses locked-out logins.
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key


def stop_all(domain: str = "bench") -> None:
    """Cancel every run of the domain that has not ended (the load a part leaves behind)."""
    from loops import services
    from loops.models import LoopRun

    for pk in (
        LoopRun.objects.filter(domain__slug=domain)
        .exclude(state__in=LoopRun.TERMINAL)
        .values_list("pk", flat=True)
    ):
        services.run_cancel(run_id=pk)


def wait_for(predicate: Callable[..., Any], timeout: float = 30, poll: float = 0.002) -> Any:
    """Until predicate() is truthy; returns what it returned."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark waited too long")
        time.sleep(poll)
    return result


def wait_all_ended(ids: list[int], timeout: float = 300, poll: float = 0.01) -> None:
    from loops.models import LoopRun

    deadline = time.monotonic() + timeout
    while LoopRun.objects.filter(pk__in=ids).exclude(state__in=LoopRun.TERMINAL).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("runs did not finish in time")
        time.sleep(poll)  # the poll costs CPU the worker needs: not too often


def wait_until_serving(base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/api/v1/health", timeout=2):  # noqa: S310
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"Daphne did not answer at {base_url}")


def percentiles(values: list[float]) -> dict[str, float]:
    """Median, p99 and max of samples; NaN for none (a part that saw nothing says so)."""
    if not values:
        return {"median": float("nan"), "p99": float("nan"), "max": float("nan"), "samples": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "median": round(statistics.median(values), 2),
        "p99": round(p99, 2),
        "max": round(max(values), 2),
        "samples": len(values),
    }


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of whole runs' figures."""
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "runs": len(values),
    }
