"""Issue 18, budgets that ask: reserved (empty) so that the issue's migrations keep one line of
dependencies whichever part lands first."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("loops", "0011_agent_adapter_realm"),
    ]

    operations = []
