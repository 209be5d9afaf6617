"""``python manage.py audit_verify``: recompute the chain and Merkle roots, check every signed head."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from portal.audit.verify import verify_log
from services.kit.audit import audit_record


class Command(BaseCommand):
    help = "Verify the audit log: hash chain, Merkle roots, signed heads (database and file), service gaps."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
        parser.add_argument(
            "--strict-services", action="store_true", help="fail on gaps in a service's sequence (may be in flight)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = verify_log()
        failed = not report.ok or (options["strict_services"] and bool(report.service_gaps))
        first = report.first
        with transaction.atomic():
            audit_record(
                "audit.log.verified",
                outcome="failure" if failed else "success",
                object_type="audit_log",
                object_id="portal",
                metadata=report.as_dict(),
                actor={"type": "system", "id": "audit_verify", "display": "manage.py audit_verify"},
            )
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict()))
        else:
            self.stdout.write(
                f"checked {report.events} events and {report.heads} signed heads in {report.seconds:.2f} s "
                f"({report.events_per_second:,.0f} events/s)"
            )
            for service, gaps in report.service_gaps.items():
                self.stdout.write(f"warning: {service} sequence has {len(gaps)} gap(s), first {gaps[:5]}")
            if first is None:
                self.stdout.write("OK" if not failed else "FAIL: service sequence gaps (--strict-services)")
            else:
                self.stdout.write(f"FAIL at seq {first.seq}: {first.reason}: {first.detail}")
                if len(report.problems) > 1:
                    self.stdout.write(f"({len(report.problems)} problems in all)")
        if failed:
            raise CommandError("audit log verification failed", returncode=1)
