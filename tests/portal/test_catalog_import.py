"""``manage.py catalog_import``: services from a YAML manifest, all or nothing, with clear errors."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from portal.catalog.models import Service

pytestmark = pytest.mark.django_db

GOOD = """
services:
  - slug: fraud-engine
    display_name: Fraud engine (vendor)
    team: {slug: risk, name: Risk}
    tier: 1
    lifecycle: production
    base_url: https://fraud.example
    health_url: https://fraud.example/health
    dependencies:
      - resource: vendor-api
  - slug: reporting
    display_name: Reporting
    dependencies:
      - service: fraud-engine
"""


def _import(tmp_path: Path, text: str) -> str:
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    out = StringIO()
    call_command("catalog_import", str(path), stdout=out)
    return out.getvalue()


def test_services_are_imported_and_a_second_import_changes_nothing(tmp_path):
    assert "2 service(s): 2 created, 0 updated" in _import(tmp_path, GOOD)

    fraud = Service.objects.get(slug="fraud-engine")
    assert (fraud.owner.slug, fraud.tier, fraud.lifecycle) == ("risk", 1, "production")
    assert fraud.registered_by == ""
    reporting = Service.objects.get(slug="reporting")
    assert reporting.dependencies.get().target == fraud
    assert "0 created, 0 updated" in _import(tmp_path, GOOD)
    assert "0 created, 1 updated" in _import(tmp_path, GOOD.replace("tier: 1", "tier: 2"))


def test_a_bad_entry_imports_nothing_and_names_every_problem(tmp_path):
    bad = (
        GOOD
        + """
  - slug: Bad Slug
    display_name: x
  - slug: third
    tier: 9
    lifecycle: beta
"""
    )
    with pytest.raises(CommandError) as refused:
        _import(tmp_path, bad)

    message = str(refused.value)
    assert "nothing imported, 4 problem(s)" in message
    assert "services[2].slug" in message
    assert "services[3].display_name: This field is required." in message
    assert "services[3].tier" in message
    assert "services[3].lifecycle" in message
    assert not Service.objects.exists()


@pytest.mark.parametrize("text", ["services: [", "just a string", "services: {a: 1}"])
def test_a_file_that_is_not_a_manifest_is_refused(tmp_path, text):
    with pytest.raises(CommandError):
        _import(tmp_path, text)
    assert not Service.objects.exists()
