"""``python -m devtools up | test [pytest args] | manage <process> <command> [args] | status | screenshots | image
| chart sync|check|render | fleet``."""

from __future__ import annotations

import sys

COMMANDS = ("up", "test", "manage", "status", "screenshots", "image", "chart", "fleet")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(
            "usage: python -m devtools up | test [pytest args] | manage <process> <command> [args] | status"
            " | screenshots [options] | image [--force] | chart sync|check|render | fleet [options]",
            file=sys.stderr,
        )
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "up":
        from devtools.up import main as run
    elif command == "test":
        from devtools.test import main as run
    elif command == "manage":
        from devtools.manage import main as run
    elif command == "status":
        from devtools.status import main as run
    elif command == "image":
        from devtools.image import main as run
    elif command == "chart":
        from devtools.chart_cli import main as run
    elif command == "fleet":
        from devtools.fleet import main as run
    else:
        from devtools.screenshots import main as run
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
