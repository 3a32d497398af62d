"""Issue 18, escalation ladders: reserved (empty) so that the issue's migrations keep one line of
dependencies whichever part lands first."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0013_interrupt_quorum"),
    ]

    operations = []
