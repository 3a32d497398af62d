"""Issue 18, approvals by several people: reserved (empty) so that the issue's migrations keep one line of
dependencies whichever part lands first."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0012_audit_chain"),
    ]

    operations = []
