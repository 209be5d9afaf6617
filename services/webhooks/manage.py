#!/usr/bin/env python
"""The webhooks service's own management commands: ``python services/webhooks/manage.py migrate``."""

import os
import sys
from pathlib import Path


def main() -> None:
    # Replace (not prepend) the script directory: its selectors.py would shadow the stdlib module.
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "services.webhooks.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
