"""``./bin/atrium screenshots`` without a stack: what it would do (``--dry-run``), and what it refuses — a
``make up`` that is not running, services anywhere but 127.0.0.1, unbounded payment counts, unknown pages.
``tests/e2e/test_first_run.py`` runs it for real against a ``make up``."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.screenshots import MAX_PAYMENTS, SHOTS, Shot, png_size, shots_resolve
from devtools.screenshots import main as screenshots_main


def var_dir_with(tmp_path: Path, **urls: str) -> Path:
    """A var directory holding demo credentials (no ``make up`` runs from it)."""
    default = {
        "portal": "http://127.0.0.1:8000",
        "ledger": "http://127.0.0.1:8001",
        "payments": "http://127.0.0.1:8002",
    }
    creds = {
        "admin": {"username": "admin", "password": "pw"},
        "client": {"client_id": "cli_x", "client_secret": "cs_y"},
        "urls": default | urls,
    }
    (tmp_path / "dev-credentials.json").write_text(json.dumps(creds))
    return tmp_path


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def screenshots(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Done]:
    """``./bin/atrium screenshots ARGS`` with ``ATRIUM_VAR_DIR`` set, in this process: its exit status and output."""

    def run(var_dir: Path, *args: str) -> Done:
        monkeypatch.setenv("ATRIUM_VAR_DIR", str(var_dir))
        capsys.readouterr()
        try:
            code = screenshots_main(list(args))
        except SystemExit as exit_:  # argparse refuses an argument this way
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return run


def test_a_dry_run_lists_every_page_and_where_its_picture_goes(tmp_path: Path, screenshots: Callable[..., Done]):
    # given credentials of a make up on the default ports
    var_dir = var_dir_with(tmp_path)

    # when the tool is asked what it would do
    done = screenshots(var_dir, "--dry-run", "--payments", "40", "--out", str(tmp_path / "out"))

    # then it names the payments and every page, at its URL, with its file; it made nothing
    assert done.returncode == 0, done.stderr
    assert "would make 40 payments through http://127.0.0.1:8002" in done.stdout
    for shot in SHOTS:
        assert f"http://127.0.0.1:8000{shot.path}  ->  {tmp_path / 'out' / shot.name}.png" in done.stdout
    assert not (tmp_path / "out").exists()


def test_only_limits_the_pages(tmp_path: Path, screenshots: Callable[..., Done]):
    done = screenshots(var_dir_with(tmp_path), "--dry-run", "--only", "home,trace")
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")] == ["home", "trace"]


@pytest.mark.parametrize(
    ("args", "urls", "says"),
    [
        # make up is not running from this var directory
        ((), {}, "`make up` is not running from"),
        # a service somewhere else than this machine's loopback, in any spelling
        (("--dry-run",), {"payments": "http://10.0.0.7:8002"}, "payments is at http://10.0.0.7:8002"),
        (("--dry-run",), {"portal": "http://localhost.example.com:8000"}, "only drives a `make up` on"),
        (("--dry-run",), {"ledger": "https://127.0.0.1:8001"}, "ledger is at https://127.0.0.1:8001"),
        (("--dry-run",), {"portal": "http://[::ffff:127.0.0.1]:8000"}, "portal is at"),
        # more payments than the bound, or fewer than none
        (("--dry-run", "--payments", str(MAX_PAYMENTS + 1)), {}, f"between 0 and {MAX_PAYMENTS}"),
        (("--dry-run", "--payments", "-1"), {}, f"between 0 and {MAX_PAYMENTS}"),
        # a page that is not in the list
        (("--dry-run", "--only", "home,../../etc/passwd"), {}, "no such shot ../../etc/passwd"),
    ],
)
def test_it_refuses_what_it_must_not_drive(
    tmp_path: Path, screenshots: Callable[..., Done], args: tuple[str, ...], urls: dict[str, str], says: str
):
    done = screenshots(var_dir_with(tmp_path, **urls), *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr


def test_it_refuses_a_var_directory_without_credentials(tmp_path: Path, screenshots: Callable[..., Done]):
    done = screenshots(tmp_path, "--dry-run")
    assert done.returncode == 2
    assert "no usable demo credentials" in done.stderr


def test_placeholders_fill_paths_and_a_missing_value_skips_the_page():
    shots = (Shot("a", "/admin/", ""), Shot("b", "/admin/trace/?q={payment}", ""), Shot("c", "/t/{task}/", ""))
    assert shots_resolve(shots, {"payment": "pay_1"}) == [
        (shots[0], "/admin/"),
        (shots[1], "/admin/trace/?q=pay_1"),
        (shots[2], None),
    ]


def test_png_size_reads_the_header_and_refuses_what_is_not_a_png(tmp_path: Path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    picture = tmp_path / "one.png"
    header = struct.pack(">IIBBBBB", 1280, 3, 8, 0, 0, 0, 0)
    pixels = zlib.compress((b"\x00" + b"\x00" * 1280) * 3)  # each row: filter byte, then grey pixels
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    assert png_size(picture) == (1280, 3)
    (tmp_path / "not.png").write_bytes(b"GIF89a" + b"\x00" * 30)
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(tmp_path / "not.png")
