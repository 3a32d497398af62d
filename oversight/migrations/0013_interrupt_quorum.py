"""Issue 18, approvals by several people (CONCEPTS 39, 40): how many an interrupt needs, from
which groups, the version of its proposal they approve, and one row per approval."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0012_audit_chain"),
    ]

    operations = [
        migrations.AddField(
            model_name="interrupt",
            name="approvals_needed",
            field=models.PositiveSmallIntegerField(default=1),
        ),
        migrations.AddField(
            model_name="interrupt",
            name="approvers_from",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="interrupt",
            name="proposal_version",
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.CreateModel(
            name="InterruptApproval",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("by", models.CharField(max_length=220)),
                ("role", models.CharField(blank=True, max_length=150)),
                ("version", models.PositiveIntegerField()),
                ("modified", models.BooleanField(default=False)),
                ("at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "interrupt",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="approvals",
                        to="oversight.interrupt",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["at", "id"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("interrupt", "version", "by"), name="interrupt_approval_once"
                    )
                ],
            },
        ),
    ]
