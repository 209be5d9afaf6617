"""``python manage.py audit_verify``: recompute the chain and Merkle roots, check every signed head.

Prints how many events and heads were checked and how fast, then ``OK`` or ``FAIL at seq N: <reason>:
<detail>`` (the lowest ``seq`` with a problem; see :mod:`portal.audit.chain_check` for the reasons), and exits
with status 1 on failure. Gaps in a service's own sequence are warnings (those events may still be in
flight), failures with ``--strict-services``; a gap wider than can be in flight, a number below 1 or held
twice, and any other value the sequencer never writes are failures (``out of range``, see
:mod:`portal.audit.chain_check`). Every run, whatever its result, is itself audited (``audit.log.verified``).
It takes time in proportion to the rows present, whatever values a row holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.audit import services
from portal.audit.chain_check import VerifyReport, verify_log


class Command(BaseCommand):
    help = "Verify the audit log: hash chain, Merkle roots, signed heads (database and file), service gaps."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
        parser.add_argument(
            "--strict-services", action="store_true", help="fail on gaps in a service's sequence (may be in flight)"
        )
        parser.add_argument(
            "--archives", action="store_true", help="also check every archive file in full (see audit_archive)"
        )
        parser.add_argument(
            "--archive-dir", default=None, help="look for the archive files here (by name) instead of where written"
        )
        parser.add_argument(
            "--all-columns",
            action="store_true",
            help="compare every row's search columns with its JSON, sealed or not (slower; see portal.audit.seal)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        strict = bool(options["strict_services"])
        try:
            report = verify_log(
                archive_files=bool(options["archives"] or options["archive_dir"]),
                archive_dir=Path(options["archive_dir"]) if options["archive_dir"] else None,
                all_columns=bool(options["all_columns"]),
            )
        except Exception as exc:
            services.verification_record(
                outcome="failure",
                metadata={"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500], "strict_services": strict},
            )
            raise CommandError(f"audit log verification could not run: {exc}", returncode=1) from exc
        failed = not report.ok or (strict and any(report.service_missing.values()))
        summary = {**report.as_dict(), "ok": not failed, "strict_services": strict}
        services.verification_record(outcome="failure" if failed else "success", metadata=summary)
        if options["json"]:
            self.stdout.write(json.dumps(summary, sort_keys=True))
        else:
            self._print(report, failed=failed)
        if failed:
            raise CommandError("audit log verification failed", returncode=1)

    def _print(self, report: VerifyReport, *, failed: bool) -> None:
        self.stdout.write(
            f"checked {report.events} events and {report.heads} signed heads in {report.seconds:.2f} s "
            f"({report.events_per_second:,.0f} events/s)"
        )
        self.stdout.write(
            f"search columns compared with the JSON: {report.columns_compared} rows "
            f"(the other {max(report.events - report.columns_compared, 0)} are sealed and untouched)"
        )
        if report.archived:
            self.stdout.write(
                f"the live log starts after {report.archived} archived events (seq {report.archived + 1})"
            )
        for service, missing in sorted(report.service_missing.items()):
            gaps = report.service_gaps.get(service, [])
            shown = ", ".join(str(n) for n in gaps[:10]) + (", …" if missing > 10 else "")
            self.stdout.write(f"warning: {service} sequence has {missing} gap(s): {shown} (maybe in flight)")
        first = report.first
        if first is not None:
            self.stdout.write(f"FAIL at seq {first.seq}: {first.reason}: {first.detail}")
            if len(report.problems) > 1:
                self.stdout.write(f"({len(report.problems)} problems in all)")
        elif failed:
            self.stdout.write("FAIL: gaps in a service's sequence (--strict-services)")
        else:
            self.stdout.write("OK")
