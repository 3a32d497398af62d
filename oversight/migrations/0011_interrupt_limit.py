from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0010_interrupt_one_copy"),
    ]

    operations = [
        migrations.AddField(
            model_name="interrupt",
            name="limit",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
