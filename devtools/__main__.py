"""``python -m devtools up|test [pytest args]``."""

from __future__ import annotations

import sys


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("up", "test"):
        print("usage: python -m devtools up | test [pytest args]", file=sys.stderr)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "up":
        from devtools.up import main as up

        return up(rest)
    from devtools.test import main as test

    return test(rest)


if __name__ == "__main__":
    sys.exit(main())
