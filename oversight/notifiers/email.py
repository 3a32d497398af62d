"""The email channel: one mail to the people of the alert's audience who have an address."""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage
from django.db.models import Q

from oversight.models import Alert
from oversight.notifiers.base import NotifyError

# Who hears an alert besides superusers: role groups of console.roles.
AUDIENCE_GROUPS = {
    Alert.Audience.ADMINS: ("admin",),
    Alert.Audience.OPERATORS: ("admin", "operator"),
}
GROUP_PREFIX = "group:"


def audience_groups(audience: str) -> tuple[str, ...]:
    """The groups an audience names: a tier's role groups, or the one named group of
    "group:<name>" (an escalation ladder's rung, issue 18)."""
    if audience.startswith(GROUP_PREFIX):
        return (audience.removeprefix(GROUP_PREFIX),)
    return AUDIENCE_GROUPS[Alert.Audience(audience)]


def recipients(*, audience: str) -> list[str]:
    """Addresses of the active superusers and members of the audience's groups."""
    users = get_user_model().objects.filter(
        Q(is_superuser=True) | Q(groups__name__in=audience_groups(audience)),
        is_active=True,
    )
    return sorted(set(users.exclude(email="").values_list("email", flat=True)))


def _one_line(text: str) -> str:
    return " ".join(text.split())


class EmailNotifier:
    def send(self, alert: Alert) -> None:
        to = recipients(audience=alert.audience)
        if not to:
            raise NotifyError("nobody in the audience has an email address", permanent=True)
        about = f"{alert.target_type} {alert.target_id}" if alert.target_type else "-"
        message = EmailMessage(
            subject=f"[{alert.level.upper()}] {_one_line(alert.title)}",
            body=(
                f"{alert.title}\n\n{alert.body}\n\n"
                f"Level: {alert.level}\nKind: {alert.kind}\nAbout: {about}\n"
                f"Raised: {alert.created_at:%Y-%m-%d %H:%M:%S %Z}\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=to,
        )
        try:
            message.send()
        except smtplib.SMTPResponseException as exc:
            # 5xx is the server's final word (bad credentials, refused sender); 4xx is "later".
            raise NotifyError(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", exc.smtp_code >= 500
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"SMTP: {type(exc).__name__}: {exc}") from exc
