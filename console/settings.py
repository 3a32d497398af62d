"""The one settings module. Every difference between deployments is an environment
variable, listed with its default in .env.example (STYLE.md B.3)."""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
from django.utils.csp import CSP
from kombu import Queue

from common.env import (
    BASE_DIR,
    DATA_DIR,
    EMBEDDED_DATABASE_URL,
    EMBEDDED_REDIS_URL,
    SECRET_KEY_FILE,
    EnvError,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_slug,
    env_str,
    env_url,
)
from common.logs import logging_config

DEBUG = env_bool("DJANGO_DEBUG", False)


def _secret_key() -> str:
    if key := os.environ.get("DJANGO_SECRET_KEY"):
        return key
    # Made (0600) by bin/console on first start: sessions survive restarts, commands agree.
    if SECRET_KEY_FILE.exists():
        return SECRET_KEY_FILE.read_text().strip()
    if DEBUG:
        return "insecure-development-key"
    raise EnvError("Set the DJANGO_SECRET_KEY environment variable (see .env.example).")


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",  # first, so runserver is Daphne's (HTTP and websockets)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",  # login throttling (Auth below)
    "django_htmx",
    "console",
    "loops",
    "oversight",
    "realms",
    "demo",  # the demo domains (DEMO_ENABLED); nothing imports it but these settings
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "console.middleware.RefuseNulMiddleware",  # before anything reads the request's input
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last (axes' documentation): turns a login refused for too many failures into the
    # lockout page, after every other middleware has seen the request.
    "axes.middleware.AxesMiddleware",
]

# The largest request body read (the API answers 413 above it): inputs are small JSON.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 1_048_576, minimum=1024)

ROOT_URLCONF = "console.urls"
ASGI_APPLICATION = "console.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.console_status",
                "console.nav.navigation",  # the domains in the navigation (issue 17)
            ],
        },
    },
]

# --- PostgreSQL: the source of truth ------------------------------------------------------
DATABASE_URL = env_url(
    "DATABASE_URL", EMBEDDED_DATABASE_URL, schemes=("postgres", "postgresql", "pgsql")
)
_database: dict[str, Any] = {
    **dj_database_url.parse(DATABASE_URL, conn_health_checks=True),
    "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 0),
}
DATABASES = {"default": _database}
_database.setdefault("OPTIONS", {}).update(
    {
        # Which process holds a connection shows in pg_stat_activity: web, worker, beat, …
        "application_name": os.environ.get("CONSOLE_PROCESS", "console"),
        "connect_timeout": 5,
        # The engine's statements bind on the server and are prepared from their 5th run on
        # (common.db.prepared_cursor); Django's cursors bind on the client, never prepared.
        "prepare_threshold": 5,
    }
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker and channel layer, never the only copy of anything -------------
REDIS_URL = env_url("REDIS_URL", EMBEDDED_REDIS_URL, schemes=("redis", "rediss"))

CHANNEL_LAYERS = {
    "default": {
        # The pub/sub layer delivered every message in DESIGN.md section 6's measurements,
        # where the default list-based layer fell behind under load.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": env_str("CHANNELS_PREFIX", "console"),
        },
    }
}

CELERY_BROKER_URL = env_url("CELERY_BROKER_URL", REDIS_URL, schemes=("redis", "rediss", "amqp"))
CELERY_TASK_IGNORE_RESULT = True  # outcomes are written to Postgres, not to a result backend
CELERY_TASK_ACKS_LATE = True  # safe because every task is idempotent (STYLE.md B.6)
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a killed worker's task is delivered again (H4)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's own default; more when steps wait on remote agents (README: Configuration).
CELERY_WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", os.cpu_count() or 1, minimum=1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery closes the database connection around every task unless told otherwise, and a new one
# cost more than a loop step (bench/): reconnect every 500 tasks (a broken one: console.celery).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 500, minimum=0)
# With acks_late a task unacknowledged this long is delivered again. Workers read the urgent
# queue first ("priority"): steps a person waits for (a decision, a lift) never queue behind.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "queue_order_strategy": "priority"}
CELERY_TASK_QUEUES = (Queue("urgent"), Queue("celery"))
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
REALM_PROBE_S = env_float("REALM_PROBE_S", 5.0, minimum=0.5, maximum=300)
CELERY_BEAT_SCHEDULE = {
    # Every 5 seconds: re-enqueue runs whose worker died or whose message was lost (H4).
    "runs-reclaim": {"task": "loops.tasks.runs_reclaim", "schedule": 5.0},
    # Every 10 seconds: notifications due for a retry, lost on the way, or left by a dead worker.
    "notifications-deliver-due": {
        "task": "oversight.tasks.notifications_deliver_due",
        "schedule": 10.0,
    },
    # Every 2 seconds: count finished contributions into the agents' posteriors (CONCEPTS 64).
    "agent-stats-fold": {"task": "loops.tasks.agent_stats_fold", "schedule": 2.0},
    # Every 5 seconds: roll the recent minutes up for the domain page's charts (issue 8).
    "domain-minutes-sweep": {"task": "loops.tasks.domain_minutes_sweep", "schedule": 5.0},
    # Every second: open breakers past their cooldown go half-open (H3).
    "breakers-half-open": {"task": "oversight.tasks.breakers_half_open_due", "schedule": 1.0},
    # Every 5 seconds: overdue interrupts take their default (H2); stray audit rows, a seal.
    "interrupts-expire": {"task": "oversight.tasks.interrupts_expire_overdue", "schedule": 5.0},
    "audit-seal": {"task": "oversight.tasks.audit_seal", "schedule": 5.0},  # issue 18
    # Realms: messages due for a retry, open remote frames' tasks, peers probed (H10).
    "realms-deliver-due": {"task": "realms.tasks.deliver_due", "schedule": 2.0},
    "realms-reconcile": {"task": "realms.tasks.frames_reconcile", "schedule": 10.0},
    "realms-probe": {"task": "realms.tasks.peers_probe", "schedule": REALM_PROBE_S},
    # Once a day: drop expired login sessions.
    "sessions-clear": {"task": "console.tasks.sessions_clear", "schedule": 24 * 3600},
}

# --- Realm (DESIGN.md section 8): slug, name, the URL peers reach (the run command's by
# default), its Ed25519 key (made under the data folder unless REALM_PRIVATE_KEY holds a PEM).
REALM_SLUG = env_slug("REALM_SLUG", "console")
REALM_NAME = env_str("REALM_NAME", REALM_SLUG)
_HERE = f"http://{env_str('HOST', '127.0.0.1')}:{env_int('PORT', 8000, minimum=1, maximum=65535)}"
REALM_URL = env_url("REALM_URL", _HERE, schemes=("http", "https")).rstrip("/")
REALM_KEY_FILE = Path(env_str("REALM_KEY_FILE", str(DATA_DIR / "realm" / "ed25519.pem")))
REALM_PRIVATE_KEY = env_str("REALM_PRIVATE_KEY", "")
REALM_SIGNATURE_SECONDS = env_int("REALM_SIGNATURE_SECONDS", 60, minimum=5, maximum=60)
REALM_BREAKER_COOLDOWN_S = env_int("REALM_BREAKER_COOLDOWN_S", 30, minimum=1)

# A worker holds a run for this long per step before another may take it over (H4), and a
# running run nobody touched for LOOP_STALE_SECONDS is enqueued again (a lost message).
LOOP_LEASE_SECONDS = env_int("LOOP_LEASE_SECONDS", 30, minimum=1)
LOOP_STALE_SECONDS = env_int("LOOP_STALE_SECONDS", 60, minimum=1)
# A worker goes on with a run's next iteration itself, without a hop through the queue, for
# up to this long per task (0: one step per task). Each iteration still locks the run and
# asks the gate; a decision, a resume or a lift waits at most this long for a worker.
LOOP_STEP_SLICE_SECONDS = env_float("LOOP_STEP_SLICE_SECONDS", 0.05, maximum=10.0)
# A remote agent whose last heartbeat is older than this hears no broadcast (CONCEPTS 33).
AGENT_HEARTBEAT_SECONDS = env_int("AGENT_HEARTBEAT_SECONDS", 60, minimum=1)

# The same failure of an agent this many times within the window raises one advisory alert
# (CONCEPTS 66); the breakers count every failure regardless.
FAILURE_PATTERN_THRESHOLD = env_int("FAILURE_PATTERN_THRESHOLD", 3, minimum=1)
FAILURE_PATTERN_WINDOW_S = env_int("FAILURE_PATTERN_WINDOW_S", 600, minimum=1)

# Modules that declare domains, agents and loop blueprints (loops.declare), imported at start.
LOOP_DECLARATIONS = env_list("LOOP_DECLARATIONS", [])

# --- The demo (demo/): three domains running continuously on generated data ---------------
# On by default only with the embedded PostgreSQL, i.e. on a machine trying the console out;
# against a real database it stays off unless DEMO_ENABLED=true, so that a production
# deployment never pages its admins about made-up patients. README "The demo" explains.
DEMO_ENABLED = env_bool("DEMO_ENABLED", DATABASE_URL == EMBEDDED_DATABASE_URL)
DEMO_RUNS_PER_DOMAIN = env_int("DEMO_RUNS_PER_DOMAIN", 3, minimum=0, maximum=50)
# The bid window of the demo's main- and sub-loops, which its rate-limited second-opinion
# agents mostly let run out: the pace of the demo (0: full speed).
DEMO_PACE_SECONDS = env_float("DEMO_PACE_SECONDS", 8.0, maximum=600)
# Per call to a simulated external system, and the share of time it is down or slow in spells.
DEMO_FAILURE_RATE = env_float("DEMO_FAILURE_RATE", 0.05, maximum=1)
DEMO_SLOW_RATE = env_float("DEMO_SLOW_RATE", 0.05, maximum=1)
DEMO_SLOW_SECONDS = env_float("DEMO_SLOW_SECONDS", 2.0, maximum=60)
# The share of generated cases that cross a limit a human must decide on.
DEMO_ESCALATION_RATE = env_float("DEMO_ESCALATION_RATE", 0.1, maximum=1)
# How long a demo escalation waits for a person before its default (reject) applies.
DEMO_DECISION_SECONDS = env_int("DEMO_DECISION_SECONDS", 300, minimum=10, maximum=86400)
# Finished demo stacks are deleted this many hours after they end (about 1,100 stacks an hour
# at the defaults would otherwise fill a laptop's disk); the audit log keeps its rows.
DEMO_KEEP_HOURS = env_int("DEMO_KEEP_HOURS", 24, minimum=1)
if DEMO_ENABLED:
    if "demo.declarations" not in LOOP_DECLARATIONS:
        LOOP_DECLARATIONS = [*LOOP_DECLARATIONS, "demo.declarations"]
    # Every 5 seconds: start main runs until each demo domain has DEMO_RUNS_PER_DOMAIN working.
    CELERY_BEAT_SCHEDULE["demo-keep-running"] = {
        "task": "demo.tasks.demo_keep_running",
        "schedule": 5.0,
    }
    # Every 10 minutes: delete finished demo stacks older than DEMO_KEEP_HOURS.
    CELERY_BEAT_SCHEDULE["demo-prune"] = {"task": "demo.tasks.demo_prune", "schedule": 600.0}

# --- Auth ---------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:dashboard"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one username
# from one address, that pair is refused, even with the right password, until
# AXES_COOLOFF_MINUTES have passed since its last attempt (each attempt meanwhile restarts
# the wait). Counting the pair, not the address or the username alone, means an attacker
# cannot lock everyone out of a shared proxy nor lock one person out from everywhere. It
# covers every password login (the sign-in page and /admin/); API bearer tokens never go
# through authenticate() and are not counted. Attempts are kept in PostgreSQL (axes' tables).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out pair
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a successful sign-in forgets the earlier failures
AXES_LOCKOUT_TEMPLATE = "registration/lockout.html"  # status 429 (AXES_HTTP_RESPONSE_CODE)

# --- HTTP security: cookies, HTTPS, headers and the Content Security Policy -------------------
# SECURE_HTTPS=true wherever browsers reach the console over HTTPS (production): cookies are
# then sent only over HTTPS, plain HTTP is redirected and HSTS is sent. Off by default, so
# that the local console on http://127.0.0.1 keeps working.
SECURE_HTTPS = env_bool("SECURE_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_HTTPS
SESSION_COOKIE_HTTPONLY = True
# The CSRF token travels in the page's hx-headers and forms, never read from the cookie.
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
# An operator signs in once per shift, not once per fortnight (Django's default).
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_HOURS", 12, minimum=1, maximum=24 * 90) * 3600
SECURE_SSL_REDIRECT = SECURE_HTTPS
# A load balancer probing plain HTTP inside the network gets the health, not a redirect.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if SECURE_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", SECURE_HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", SECURE_HTTPS)
# Behind a TLS proxy, the header it sets to "https" (e.g. X-Forwarded-Proto): only if the
# proxy always sets it, overwriting what the client sent.
if _proxy_header := env_str("SECURE_PROXY_SSL_HEADER", ""):
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Nothing inline: no <script> or style="" in any page, htmx's eval off (base.html), plotly
# figures drawn by static/console/app.js from data attributes, plotly's own CSS served as a
# file (static/console/plotly.css). Pushed fragments therefore need no nonce. 'self' in
# connect-src also allows the same host's ws: and wss: (CSP Level 3), the console's websocket.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],  # data: for the blank favicon
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "upgrade-insecure-requests": SECURE_HTTPS,
}

# --- Email (alerts and notifications): Django 6.1's MAILERS ------------------------------
_smtp = {
    "host": env_str("EMAIL_HOST", ""),
    "port": env_int("EMAIL_PORT", 587, minimum=1, maximum=65535),
    "username": env_str("EMAIL_HOST_USER", ""),
    "password": env_str("EMAIL_HOST_PASSWORD", ""),
    "use_tls": env_bool("EMAIL_USE_TLS", True),
    "timeout": 10,
}
MAILERS = {
    "default": (
        {"BACKEND": "django.core.mail.backends.smtp.EmailBackend", "OPTIONS": _smtp}
        if _smtp["host"]
        # No SMTP server configured: mails are written to the log instead of being lost.
        else {"BACKEND": "django.core.mail.backends.console.EmailBackend"}
    )
}
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "loop-console@localhost")


def _alert_webhooks() -> dict[str, str]:
    """ALERT_WEBHOOKS=name=url,name=url: where every alert is POSTed (oversight.notifiers)."""
    hooks: dict[str, str] = {}
    for pair in env_list("ALERT_WEBHOOKS", []):
        name, sep, url = (part.strip() for part in pair.partition("="))
        # The name becomes the notification channel "webhook:<name>".
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]{1,60}", name):
            raise EnvError(
                f"ALERT_WEBHOOKS: {pair!r} is not name=url, the name of letters, digits, - or _."
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EnvError(f"ALERT_WEBHOOKS: {name}={url!r} is not an http(s) URL with a host.")
        if name in hooks:
            raise EnvError(f"ALERT_WEBHOOKS: the name {name!r} is given twice.")
        hooks[name] = url
    return hooks


ALERT_WEBHOOKS = _alert_webhooks()
# Signs every webhook body (X-Console-Signature), so receivers can tell our calls from others.
ALERT_WEBHOOK_SECRET = env_str("ALERT_WEBHOOK_SECRET", "")
if ALERT_WEBHOOKS and not ALERT_WEBHOOK_SECRET:
    raise EnvError("Set ALERT_WEBHOOK_SECRET: the ALERT_WEBHOOKS calls are signed with it.")
# A notification is given up (failed) after this many attempts. The waits between them double
# from about 5 s (oversight.services.alerts), so the last comes 5 to 11 minutes after the first.
NOTIFICATION_MAX_ATTEMPTS = 8
# A notification claimed for sending longer ago than this is taken over: its worker died
# mid-send. Far longer than a send can take (5 s webhook and 10 s SMTP timeouts).
NOTIFICATION_CLAIM_SECONDS = 120

# --- Static files: vendored htmx and plotly.js, served by whitenoise in production too ----
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

# --- Logs and metrics (README: Metrics and logs) ---------------------------------------------
# One JSON object a line by default (a log collector's), "text" for a person; records carry
# run_id and root_id in a step, a task's name and id in a worker (common.logs, console.celery).
LOG_FORMAT = env_str("LOG_FORMAT", "json")
if LOG_FORMAT not in ("json", "text"):
    raise EnvError(f"LOG_FORMAT={LOG_FORMAT!r}: use 'json' or 'text'.")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise EnvError(f"LOG_LEVEL={LOG_LEVEL!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL.")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)

# Prometheus (console.metrics): every process observes, the scrape sums the files in this
# folder (emptied at each start); set before prometheus_client's import picks its mode.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(DATA_DIR / "metrics"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
