"""The README's shell walkthroughs as tests: a section between ``<!-- readme-run:NAME -->`` and
``<!-- /readme-run:NAME -->`` is run as it reads, so a walkthrough that goes stale fails a test.

Only the fenced ``sh`` and ``bash`` blocks of the section are run, in order, as one bash script under
``set -euo pipefail`` (or a POSIX ``sh`` one under ``set -eu``): every command must succeed, an unset variable is an
error. Fences of any other language
(``json``, ``text``, output shown to the reader) are left alone. The script keeps the README's line numbers (the
lines between blocks become empty lines), so a failure names the README line of the command that failed.

The commands run exactly as printed. A test may replace literal text (``substitutions``, e.g. the default
``http://127.0.0.1:8000`` by the URL of the ``make up`` it started); each text to replace must occur in the
section, so a substitution cannot go stale silently either. After the last block, the values of ``report``'s
variables are written where the test reads them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SHELLS = ("sh", "bash")
_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Line 1 of the script: the shell's rules, and (bash) a line naming the README line of a failing command. POSIX sh
# has neither pipefail nor an ERR trap: it stops at the first failing command, a pipeline's last one.
_PROLOGUES = {
    "bash": (
        "set -euo pipefail; "
        "trap 'status=$?; echo \"readme-run: the command at README line $LINENO failed (exit $status)\" >&2' ERR"
    ),
    "sh": "set -eu",
}


class ReadmeSectionError(Exception):
    """The section is missing or malformed: its markers, its fences, or it has no shell block."""


class ReadmeRunFailed(AssertionError):
    """A command of the section failed; ``line`` is its README line when bash said which."""

    def __init__(self, run: ReadmeRun) -> None:
        self.run = run
        self.line = run.failed_line
        where = f"at README line {self.line}" if self.line else "(no line reported)"
        super().__init__(
            f"README section {run.section.name!r} failed {where}, exit {run.returncode}\n"
            f"--- stdout ---\n{run.stdout[-4000:]}\n--- stderr ---\n{run.stderr[-4000:]}"
        )


@dataclass(frozen=True)
class ReadmeBlock:
    first_line: int  # the README line of the block's first command (1-based)
    text: str


@dataclass(frozen=True)
class ReadmeSection:
    name: str
    blocks: tuple[ReadmeBlock, ...]
    line_count: int  # the README's lines, up to the section's end marker

    def script(self, substitutions: dict[str, str] | None = None, shell: str = "bash") -> str:
        """The blocks as one script whose line N is README line N (line 1 holds the prologue)."""
        lines = [""] * (self.line_count + 1)
        lines[0] = _PROLOGUES[shell]
        for block in self.blocks:
            for offset, line in enumerate(block.text.split("\n")):
                lines[block.first_line - 1 + offset] = line
        script = "\n".join(lines)
        for old, new in (substitutions or {}).items():
            if old not in self.text:
                raise ReadmeSectionError(f"section {self.name!r} no longer contains {old!r} (a stale substitution)")
            script = script.replace(old, new)
        return script

    @property
    def text(self) -> str:
        return "\n".join(block.text for block in self.blocks)


@dataclass
class ReadmeRun:
    section: ReadmeSection
    returncode: int
    stdout: str
    stderr: str
    values: dict[str, str] = field(default_factory=dict)

    @property
    def failed_line(self) -> int | None:
        # The ERR trap's line, else bash's own ("<script>: line N: X: unbound variable" exits without the trap).
        found = re.findall(r"readme-run: the command at README line (\d+) failed", self.stderr)
        found = found or re.findall(r"\.sh: line (\d+): ", self.stderr)
        return int(found[0]) if found else None

    def check(self) -> ReadmeRun:
        if self.returncode != 0:
            raise ReadmeRunFailed(self)
        return self


def readme_section(name: str, text: str | None = None) -> ReadmeSection:
    """The fenced shell blocks between the section's markers (in ``text``, else the repository's README)."""
    if not _NAME.match(name):
        raise ReadmeSectionError(f"not a section name: {name!r}")
    lines = (README.read_text() if text is None else text).split("\n")
    begin, end = f"<!-- readme-run:{name} -->", f"<!-- /readme-run:{name} -->"
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1:
        raise ReadmeSectionError(
            f"section {name!r} needs exactly one {begin} and one {end} (found {len(starts)} and {len(ends)})"
        )
    start, stop = starts[0], ends[0]
    if stop < start:
        raise ReadmeSectionError(f"section {name!r} ends before it begins")
    blocks: list[ReadmeBlock] = []
    fence: str | None = None
    info = ""
    body: list[str] = []
    body_start = 0
    for index in range(start + 1, stop):
        line = lines[index]
        match = _FENCE.match(line.strip()) if fence is None else None
        if fence is None and match:
            fence, info, body, body_start = match["fence"], match["info"].strip().split(" ")[0], [], index + 1
        elif fence is not None and line.strip() == fence:
            if info in SHELLS:
                blocks.append(ReadmeBlock(first_line=body_start + 1, text="\n".join(body)))
            fence = None
        elif fence is not None:
            body.append(line)
        elif "readme-run:" in line:
            raise ReadmeSectionError(f"README line {index + 1}: a readme-run marker inside section {name!r}")
    if fence is not None:
        raise ReadmeSectionError(f"section {name!r}: the fence opened at README line {body_start} is not closed")
    if not blocks:
        raise ReadmeSectionError(f"section {name!r} has no fenced sh or bash block")
    return ReadmeSection(name=name, blocks=tuple(blocks), line_count=stop + 1)


def readme_run(
    section: ReadmeSection,
    *,
    env: dict[str, str],
    cwd: Path,
    substitutions: dict[str, str] | None = None,
    report: tuple[str, ...] = (),
    timeout: float = 180,
    shell: str = "bash",
) -> ReadmeRun:
    """Run the section with ``shell`` (bash, or POSIX ``sh``) in ``cwd`` with exactly ``env``; ``report``'s
    variables as they were at the end."""
    if shell not in _PROLOGUES:
        raise ValueError(f"not a shell this runner knows: {shell!r}")
    for name in report:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"not a shell variable: {name!r}")
    with tempfile.TemporaryDirectory(prefix="readme-run-") as scratch:
        values_path = Path(scratch) / "values"
        script_path = Path(scratch) / f"{section.name}.sh"
        epilogue = "".join(f'printf "%s=%s\\0" {name} "${{{name}-}}" >> "$1"\n' for name in report)
        script_path.write_text(section.script(substitutions, shell) + "\n" + epilogue)
        done = subprocess.run(
            [shell, str(script_path), str(values_path)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        values = {}
        if values_path.exists():
            for item in values_path.read_text().split("\0"):
                if item:
                    name, _, value = item.partition("=")
                    values[name] = value
    return ReadmeRun(section=section, returncode=done.returncode, stdout=done.stdout, stderr=done.stderr, values=values)


def shell_env(**extra: str) -> dict[str, str]:
    """What a newcomer's terminal has: PATH without this virtualenv (``python3`` is the machine's), HOME, a locale;
    nothing of this test run's settings."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    return {name: os.environ[name] for name in keep if name in os.environ} | {"PATH": path} | extra
