"""DESIGN.md H5: the application cannot update or delete an audit row. PostgreSQL refuses
it, whatever code asks: a trigger raises on every UPDATE and DELETE of oversight_auditevent.

TRUNCATE is left to the table's owner (a test database is emptied that way); the
application never truncates, and a role that can drop a trigger is beyond any table rule.
"""

from __future__ import annotations

from django.db import migrations

FORWARD = """
CREATE FUNCTION oversight_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % of an audit row is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER oversight_audit_append_only
    BEFORE UPDATE OR DELETE ON oversight_auditevent
    FOR EACH ROW EXECUTE FUNCTION oversight_audit_append_only();
"""

BACKWARD = """
DROP TRIGGER oversight_audit_append_only ON oversight_auditevent;
DROP FUNCTION oversight_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("oversight", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
