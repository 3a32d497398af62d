"""Issue 18, the audit chain: reserved (empty) so that the issue's migrations keep one line of
dependencies whichever part lands first."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0011_interrupt_limit"),
    ]

    operations = []
