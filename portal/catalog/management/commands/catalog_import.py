"""``python manage.py catalog_import FILE``: add or update services from a YAML manifest.

For services that do not register themselves (a vendor's API, a database run by another team). The file
holds ``services:``, a list of manifests as ``PUT /api/v1/catalog/services/{slug}`` takes them, each with
its ``slug`` (see ``docs/catalog.md``). Every entry is checked first; if any is invalid, the errors are
listed (``services[2].tier: …``) and nothing is imported. Otherwise all are registered in one transaction,
idempotently (a re-import changes and audits only what changed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from portal.catalog.api.serializers import ManifestSerializer
from portal.catalog.errors import HealthURLRefused
from portal.catalog.models import SLUG_HELP, SLUG_REGEX, Service
from portal.catalog.services import manifest_health_url_check, service_register


def _flatten(detail: Any, prefix: str) -> list[str]:
    if isinstance(detail, dict):
        return [line for key, value in detail.items() for line in _flatten(value, f"{prefix}.{key}")]
    if isinstance(detail, list) and detail and not isinstance(detail[0], str):
        return [line for i, value in enumerate(detail) for line in _flatten(value, f"{prefix}[{i}]")]
    if isinstance(detail, list):
        return [f"{prefix}: {message}" for message in detail]
    return [f"{prefix}: {detail}"]


class Command(BaseCommand):
    help = "Add or update catalog services from a YAML manifest (all or nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="YAML with a top-level 'services:' list")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise CommandError(f"{path}: not valid YAML: {exc}") from exc
        entries = document.get("services") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise CommandError(f"{path}: expected a mapping with a 'services:' list")
        errors: list[str] = []
        valid: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            where = f"services[{index}]"
            if not isinstance(entry, dict):
                errors.append(f"{where}: expected a mapping")
                continue
            body = dict(entry)
            slug = body.pop("slug", None)
            if not isinstance(slug, str) or not re.fullmatch(SLUG_REGEX, slug):
                errors.append(f"{where}.slug: {SLUG_HELP}")
                continue
            if slug in seen:
                errors.append(f"{where}.slug: {slug!r} appears twice")
                continue
            seen.add(slug)
            manifest = ManifestSerializer(data=body)
            if not manifest.is_valid():
                errors.extend(_flatten(manifest.errors, where))
                continue
            data = dict(manifest.validated_data)
            try:
                manifest_health_url_check(manifest=data, service=Service.objects.filter(slug=slug).first())
            except HealthURLRefused as refused:
                errors.append(f"{where}.health_url: {refused.detail} ({refused.code})")
                continue
            valid.append((slug, data))
        if errors:
            raise CommandError(f"{path}: nothing imported, {len(errors)} problem(s):\n  " + "\n  ".join(errors))
        created = updated = 0
        with transaction.atomic():
            for slug, manifest in valid:
                registration = service_register(slug=slug, manifest=manifest, client_id=None)
                created += registration.created
                updated += bool(not registration.created and registration.changed)
        self.stdout.write(f"{len(valid)} service(s): {created} created, {updated} updated, the rest unchanged")
