"""``python manage.py audit_archive``: move signed prefixes older than the retention period to archive files.

Each archive is written, read back and verified before anything is deleted; see :mod:`portal.audit.archive`
and docs/audit.md ("Retention and archival"). ``--dry-run`` only says what would be archived.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.audit import services
from portal.audit.archive import archive_plan, archived_upto, retention_cutoff
from portal.audit.errors import ArchiveError


class Command(BaseCommand):
    help = "Archive audit events older than the retention period to verifiable JSONL files, then delete them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-days",
            type=int,
            default=None,
            help="archive what was signed more than this many days ago (default AUDIT_RETENTION_DAYS)",
        )
        parser.add_argument("--upto", type=int, default=None, help="archive no event beyond this seq")
        parser.add_argument(
            "--output", default=None, help="directory for the archive files (default AUDIT_ARCHIVE_DIR)"
        )
        parser.add_argument(
            "--max-events", type=int, default=1_000_000, help="events per archive file, about (default 1,000,000)"
        )
        parser.add_argument(
            "--no-proofs", action="store_true", help="leave out each event's inclusion proof (smaller files)"
        )
        parser.add_argument("--dry-run", action="store_true", help="say what would be archived; change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than_days"]
        days = settings.AUDIT_RETENTION_DAYS if days is None else days
        if days < 0 or options["max_events"] < 1:
            raise CommandError("--older-than-days must be ≥ 0 and --max-events ≥ 1")
        before = retention_cutoff(days)
        directory = Path(options["output"] or settings.AUDIT_ARCHIVE_DIR)
        if options["dry_run"]:
            plan = archive_plan(before=before, max_events=options["max_events"], upto=options["upto"])
            if plan is None:
                self.stdout.write(
                    f"nothing to archive (archived up to seq {archived_upto()}; cut-off {before:%Y-%m-%d})"
                )
            else:
                self.stdout.write(
                    f"would archive seqs {plan.first_seq}-{plan.last_seq} ({plan.events} events, head signed "
                    f"{plan.head.timestamp}) to {directory}, and more files after it if older heads remain"
                )
            return
        try:
            done = services.archive_run(
                before=before,
                directory=directory,
                max_events=options["max_events"],
                upto=options["upto"],
                proofs=not options["no_proofs"],
            )
        except ArchiveError as exc:
            raise CommandError(f"archival stopped, nothing of this archive was deleted: {exc}") from exc
        if not done:
            self.stdout.write(f"nothing to archive (archived up to seq {archived_upto()}; cut-off {before:%Y-%m-%d})")
        for row in done:
            self.stdout.write(
                f"archived seqs {row.first_seq}-{row.last_seq} ({row.events} events) to {row.path} "
                f"({row.file_bytes:,} bytes, sha256 {row.file_sha256})"
            )
