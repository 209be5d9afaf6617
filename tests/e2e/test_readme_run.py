"""The README walkthrough runner (``tests/readme_run.py``) on its own, without a ``make up``: it extracts exactly the
shell blocks between a section's markers, keeps the README's line numbers, and fails — naming the README line — on
a stale or broken command. ``tests/e2e/test_first_run.py`` runs the real sections against a real ``make up``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from devtools.infra import REPO_ROOT, free_port
from tests.readme_run import (
    README,
    ReadmeRunFailed,
    ReadmeSectionError,
    readme_run,
    readme_section,
    shell_env,
)

PLANTED = """# A README

<!-- readme-run:demo -->
Set a value:

```sh
GREETING=hello
```

What it prints (not run):

```text
exit 1
```

```json
{"not": "run"}
```

```bash title="also run"
echo "$GREETING world"
```

~~~sh
echo tilde fences too
~~~
<!-- /readme-run:demo -->

```sh
echo outside the section
```
"""


def credentials(tmp_path: Path, port: int) -> Path:
    """A var directory whose dev-credentials.json names services on ``port`` (nothing listens there)."""
    urls = {name: f"http://127.0.0.1:{port}" for name in ("portal", "ledger", "payments")}
    creds = {
        "admin": {"username": "admin", "password": "pw"},
        "client": {"client_id": "cli_x", "client_secret": "cs_y"},
    }
    (tmp_path / "dev-credentials.json").write_text(json.dumps(creds | {"urls": urls}))
    return tmp_path


def test_the_first_payment_section_is_seven_shell_blocks_at_their_readme_lines():
    # given the repository's README
    lines = README.read_text().split("\n")

    # when its walkthrough is extracted
    section = readme_section("first-payment")

    # then it is the seven shell blocks, each at the README line it starts on, and the script keeps those lines
    assert len(section.blocks) == 7
    script = section.script().split("\n")
    for block in section.blocks:
        assert lines[block.first_line - 2] in ("```sh", "```bash")
        for offset, line in enumerate(block.text.split("\n")):
            assert script[block.first_line - 1 + offset] == lines[block.first_line - 1 + offset] == line
    assert "Idempotency-Key" in section.text
    assert "/admin/trace/?q=" in section.text


def test_only_the_shell_blocks_between_the_markers_run(tmp_path: Path):
    # given a README with sh, bash, text and json fences inside the markers and an sh block after them
    section = readme_section("demo", PLANTED)

    # when it runs
    run = readme_run(section, env=shell_env(), cwd=tmp_path, report=("GREETING",)).check()

    # then the sh and bash blocks ran in order, nothing else, and the variables are reported
    assert run.stdout.split("\n") == ["hello world", "tilde fences too", ""]
    assert run.values == {"GREETING": "hello"}
    assert [block.first_line for block in section.blocks] == [7, 21, 25]


def test_the_credentials_block_runs_as_printed(tmp_path: Path):
    # given a var directory with a credentials file, as `make up` writes it
    var_dir = credentials(tmp_path, 8000)
    first = readme_section("first-payment")

    # when the walkthrough's first block runs (it needs no server)
    only_first = dataclasses.replace(first, blocks=first.blocks[:1])
    run = readme_run(
        only_first, env=shell_env(ATRIUM_VAR_DIR=str(var_dir)), cwd=REPO_ROOT, report=("CLIENT_ID", "PAYMENTS")
    ).check()

    # then it read the client and the URLs from that file
    assert run.values == {"CLIENT_ID": "cli_x", "PAYMENTS": "http://127.0.0.1:8000"}


@pytest.mark.parametrize(
    ("planted", "says"),
    [
        # a field the credentials file does not have (a README gone stale after a rename)
        ('CLIENT_ID=$(field client.id < "$CREDS")', "no client.id in:"),
        # a command that does not exist
        ("atrium-frobnicate --all", "command not found"),
        # a variable no block sets
        ('echo "$ACCOUNT_THAT_NOBODY_SET"', "unbound variable"),
        # a failure in the middle of a pipeline (pipefail)
        ("false | cat", ""),
    ],
)
def test_a_planted_broken_command_fails_the_run_at_its_readme_line(tmp_path: Path, planted: str, says: str):
    # given the README with one broken command planted after the credentials' first line
    var_dir = credentials(tmp_path, 8000)
    anchor = 'CLIENT_ID=$(field client.client_id < "$CREDS")'
    text = README.read_text()
    assert text.count(anchor) == 1
    broken = text.replace(anchor, f"{anchor}\n{planted}")
    planted_line = text[: text.index(anchor)].count("\n") + 2
    first = readme_section("first-payment", broken)

    # when its first block runs
    run = readme_run(
        dataclasses.replace(first, blocks=first.blocks[:1]), env=shell_env(ATRIUM_VAR_DIR=str(var_dir)), cwd=REPO_ROOT
    )

    # then the run fails, naming the planted line, and nothing after it ran
    with pytest.raises(ReadmeRunFailed) as failed:
        run.check()
    assert failed.value.line == planted_line
    assert says in run.stderr
    assert f"README line {planted_line}" in str(failed.value)


def test_the_whole_walkthrough_fails_when_nothing_answers(tmp_path: Path):
    # given credentials naming a port nothing listens on (make up is not running)
    var_dir = credentials(tmp_path, free_port())
    section = readme_section("first-payment")

    # when the walkthrough runs
    run = readme_run(section, env=shell_env(ATRIUM_VAR_DIR=str(var_dir)), cwd=REPO_ROOT, report=("PAYMENT",))

    # then it stops at the first token request (block 2), says why, and never made a payment
    assert run.returncode != 0
    assert section.blocks[1].first_line <= run.failed_line < section.blocks[2].first_line
    assert "Failed to connect" in run.stderr or "Connection refused" in run.stderr
    assert run.values == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("no markers at all\n```sh\ntrue\n```\n", "needs exactly one"),
        ("<!-- readme-run:demo -->\n```sh\ntrue\n```\n", "needs exactly one"),
        ("<!-- /readme-run:demo -->\n<!-- readme-run:demo -->\n```sh\ntrue\n```\n", "ends before it begins"),
        ("<!-- readme-run:demo -->\n```sh\ntrue\n<!-- /readme-run:demo -->\n", "is not closed"),
        ("<!-- readme-run:demo -->\n```json\n{}\n```\n<!-- /readme-run:demo -->\n", "no fenced sh or bash block"),
        (
            "<!-- readme-run:demo -->\n<!-- readme-run:other -->\n```sh\ntrue\n```\n<!-- /readme-run:demo -->\n",
            "marker inside",
        ),
        (
            "<!-- readme-run:demo -->\n```sh\ntrue\n```\n<!-- /readme-run:demo -->\n"
            "<!-- readme-run:demo -->\n<!-- /readme-run:demo -->\n",
            "needs exactly one",
        ),
    ],
)
def test_a_malformed_section_is_refused(text: str, problem: str):
    with pytest.raises(ReadmeSectionError, match=problem):
        readme_section("demo", text)


def test_a_stale_substitution_and_a_bad_report_name_are_refused(tmp_path: Path):
    section = readme_section("demo", PLANTED)
    with pytest.raises(ReadmeSectionError, match="stale substitution"):
        section.script({"http://127.0.0.1:8000": "http://127.0.0.1:9"})
    with pytest.raises(ValueError, match="not a shell variable"):
        readme_run(section, env=shell_env(), cwd=tmp_path, report=("X; rm -rf /",))
    with pytest.raises(ReadmeSectionError, match="not a section name"):
        readme_section("../README", PLANTED)
    with pytest.raises(ValueError, match="not a shell"):
        readme_run(section, env=shell_env(), cwd=tmp_path, shell="python3")


def test_a_posix_shell_stops_at_the_first_failing_command(tmp_path: Path):
    # given a section whose second command fails
    text = "<!-- readme-run:demo -->\n```sh\necho one\nfalse\necho never\n```\n<!-- /readme-run:demo -->\n"

    # when it runs in sh
    run = readme_run(readme_section("demo", text), env=shell_env(), cwd=tmp_path, shell="sh")

    # then it stopped there
    assert run.returncode != 0
    assert run.stdout == "one\n"
