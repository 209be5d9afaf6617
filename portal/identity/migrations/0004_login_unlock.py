"""Grant unlocking locked-out logins (``axes.delete_accessattempt``) to the roles whose rules include it: operator
(and admin, which holds everything). Auditors and viewers may at most look at the attempts."""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def grant_unlock(apps, schema_editor):
    # Permissions are created after all migrations (post_migrate); create axes's now so they can be granted here.
    axes = apps.get_app_config("axes")
    axes.models_module = True
    create_permissions(axes, apps=apps, verbosity=0)
    axes.models_module = None
    from portal.identity.roles import roles_sync

    roles_sync(apps)


def revoke_unlock(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    unlock = Permission.objects.filter(content_type__app_label="axes", codename="delete_accessattempt")
    for group in Group.objects.filter(name="operator"):
        group.permissions.remove(*unlock)


class Migration(migrations.Migration):
    dependencies = [
        ("identity", "0003_secret_grace"),
        ("axes", "0010_accessattemptexpiration"),
    ]

    operations = [migrations.RunPython(grant_unlock, revoke_unlock)]
