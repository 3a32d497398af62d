"""Issue 18, escalation ladders: an interrupt keeps its ladder as raised (absolute times) and
when its next rung is due, indexed for the beat sweep; an alert's audience may name a group
("group:<name>"), so it is longer."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0013_interrupt_quorum"),
    ]

    operations = [
        migrations.AddField(
            model_name="interrupt",
            name="ladder",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="interrupt",
            name="rung_due_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="interrupt",
            index=models.Index(
                condition=models.Q(("rung_due_at__isnull", False), ("status", "pending")),
                fields=["rung_due_at"],
                name="interrupt_rung_due",
            ),
        ),
        migrations.AlterField(
            model_name="alert",
            name="audience",
            field=models.CharField(
                choices=[("operators", "Operators"), ("admins", "Admins")],
                default="operators",
                max_length=90,
            ),
        ),
    ]
