"""Issue 18, the audit chain (DESIGN.md H5, CONCEPTS 39 and 52): each audit row gets a place in
a hash chain, written once by the sealer (oversight.chain) after the row's commit.

The append-only trigger of 0002 now lets exactly that one UPDATE through: the three chain
columns from null to a value, every other column as it was (compared as the whole row's
jsonb, so a column added later is covered without touching this function). Everything else
is refused as before. A row is inserted unsealed: a row that arrives with a place in the
chain would be a forged link, so INSERT refuses one.
"""

from django.db import migrations, models
from django.db.models import Q

CHAIN = "'{chain_position,chain_prev,chain_hash}'::text[]"

FORWARD = f"""
CREATE OR REPLACE FUNCTION oversight_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The sealer's one update: the chain's columns, from null, and nothing else.
    IF TG_OP = 'UPDATE'
        AND OLD.chain_position IS NULL AND OLD.chain_prev IS NULL AND OLD.chain_hash IS NULL
        AND NEW.chain_position IS NOT NULL AND NEW.chain_prev IS NOT NULL
        AND NEW.chain_hash IS NOT NULL
        AND to_jsonb(NEW) - {CHAIN} = to_jsonb(OLD) - {CHAIN}
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % of an audit row is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE FUNCTION oversight_audit_inserted_unsealed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.chain_position IS NOT NULL OR NEW.chain_prev IS NOT NULL
        OR NEW.chain_hash IS NOT NULL THEN
        RAISE EXCEPTION 'an audit row is inserted unsealed: only the sealer gives it a place'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER oversight_audit_inserted_unsealed
    BEFORE INSERT ON oversight_auditevent
    FOR EACH ROW EXECUTE FUNCTION oversight_audit_inserted_unsealed();
"""

# 0002's function, as it was.
BACKWARD = """
DROP TRIGGER oversight_audit_inserted_unsealed ON oversight_auditevent;
DROP FUNCTION oversight_audit_inserted_unsealed();
CREATE OR REPLACE FUNCTION oversight_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % of an audit row is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0011_interrupt_limit"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="auditevent",
            options={
                "ordering": ["-at", "-id"],
                "permissions": [("verify_auditevent", "Can verify the audit log's hash chain")],
            },
        ),
        migrations.AddField(
            model_name="auditevent",
            name="chain_position",
            field=models.BigIntegerField(blank=True, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="chain_prev",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="chain_hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["id"], name="audit_unsealed", condition=Q(chain_hash=None)),
        ),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.CheckConstraint(
                condition=Q(chain_position=None, chain_prev=None, chain_hash=None)
                | Q(
                    chain_position__isnull=False,
                    chain_prev__isnull=False,
                    chain_hash__isnull=False,
                ),
                name="audit_sealed_whole",
            ),
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
