"""Issue 17: an interrupt's open alerts are found by their target, to retire them when it is
settled (oversight.services.alerts.alerts_retire)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0014_interrupt_ladder"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(
                condition=models.Q(("acknowledged_at__isnull", True)),
                fields=["target_type", "target_id"],
                name="alert_open_by_target",
            ),
        ),
    ]
