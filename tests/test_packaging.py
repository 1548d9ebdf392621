"""The Python distribution and the Debian packages, built for real.

The sdist and wheel are built with Debian 12's own setuptools (/usr/bin/python3), the floor in
pyproject.toml; the .debs with packaging/build-deb. tests/systemd/run-in-nspawn then installs,
upgrades and purges the .debs under a booted systemd.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from lanchatd.daemon import config

REPO = Path(__file__).resolve().parents[1]
DEBIAN_PYTHON = Path("/usr/bin/python3")
BUILD_DEB_TIMEOUT = 300
# What the repository has that an sdist leaves out: git's own file and the CI entry point.
NOT_IN_SDIST = {".gitignore", ".ci/run"}


def tracked_files() -> set[str]:
    """The files git tracks that are in the working tree (a scratch file is no part of it)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    return {name for name in listed.split("\0") if name and (REPO / name).exists()}


def debian_setuptools() -> None:
    """Skip unless Debian's python3 has setuptools (python3-setuptools, 66 on Debian 12)."""
    found = DEBIAN_PYTHON.exists() and (
        subprocess.run(
            [DEBIAN_PYTHON, "-c", "import setuptools"],
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode
        == 0
    )
    if not found:
        pytest.skip("needs Debian's python3 with python3-setuptools")


def build(backend_call: str, source: Path, outdir: Path) -> Path:
    """Run a setuptools.build_meta hook with Debian's setuptools in SOURCE; the built file."""
    outdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            DEBIAN_PYTHON,
            "-c",
            "import sys; from setuptools import build_meta as backend;"
            f" print(backend.{backend_call}(sys.argv[1]))",
            outdir,
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return outdir / result.stdout.splitlines()[-1]


@pytest.fixture(scope="module")
def unpacked_sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, built from a copy of the working tree and unpacked."""
    debian_setuptools()
    copy = tmp_path_factory.mktemp("tree")
    for name in tracked_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    sdist = build("build_sdist", copy, tmp_path_factory.mktemp("sdist"))
    unpacked = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (root,) = unpacked.iterdir()
    return root


def build_debs(source: Path, outdir: Path) -> list[Path]:
    """packaging/build-deb in SOURCE; skipped where the build tools cannot be had."""
    if shutil.which("dpkg-buildpackage") is None:
        pytest.skip("needs dpkg-dev (dpkg-buildpackage)")
    missing = subprocess.run(
        ["dpkg-checkbuilddeps", REPO / "packaging/debian/control"],
        capture_output=True,
        timeout=60,
        check=False,
    ).returncode
    if missing and os.geteuid() != 0:
        pytest.skip("the build dependencies are missing and only root may install them")
    result = subprocess.run(
        [source / "packaging/build-deb", outdir],
        capture_output=True,
        text=True,
        timeout=BUILD_DEB_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [Path(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three .debs built from the working tree, by package name."""
    built = build_debs(REPO, tmp_path_factory.mktemp("debs"))
    return {path.name.split("_")[0]: path for path in built}


def deb_files(deb: Path) -> set[str]:
    """The regular files and symlinks in a .deb, as absolute paths."""
    tar = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, check=True, timeout=60
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return {member.name.removeprefix(".") for member in archive if not member.isdir()}


def test_sdist_has_every_file_of_the_tree(unpacked_sdist: Path) -> None:
    in_sdist = {
        str(path.relative_to(unpacked_sdist))
        for path in unpacked_sdist.rglob("*")
        if path.is_file()
    }
    assert tracked_files() - NOT_IN_SDIST - in_sdist == set()


def test_sdist_collects_its_own_tests(unpacked_sdist: Path) -> None:
    # Collection imports every test module and the helpers they import.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=unpacked_sdist,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " tests collected" in result.stdout.splitlines()[-1]


def test_wheel_from_sdist_carries_licence_and_metadata(
    unpacked_sdist: Path, tmp_path: Path
) -> None:
    wheel = build("build_wheel", unpacked_sdist, tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        (info,) = {name.split("/")[0] for name in archive.namelist() if ".dist-info/" in name}
        licence = archive.read(f"{info}/LICENSE").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
        scripts = archive.read(f"{info}/entry_points.txt").decode()
    assert licence == (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License\n")
    headers = metadata.split("\n\n")[0].splitlines()
    assert "Name: lanchatd" in headers
    assert "License: MIT" in headers
    assert "Classifier: License :: OSI Approved :: MIT License" in headers
    for command in ("lanchatd", "lanchatctl", "lanchat"):
        assert f"{command} = " in scripts


def test_sdist_builds_the_debian_packages(unpacked_sdist: Path, tmp_path: Path) -> None:
    built = build_debs(unpacked_sdist, tmp_path)
    assert sorted(path.name.split("_")[0] for path in built) == [
        "lanchat",
        "lanchatd",
        "python3-lanchat",
    ]


def test_debs_are_lintian_clean(debs: dict[str, Path]) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("needs lintian (.ci/run installs it)")
    result = subprocess.run(
        ["lintian", "--info", "--pedantic", "--fail-on", "error,warning", *debs.values()],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    tags = [line for line in result.stdout.splitlines() if line[:2] in {"E:", "W:"}]
    assert tags == []
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_builds_are_byte_identical(debs: dict[str, Path], tmp_path: Path) -> None:
    again = build_debs(REPO, tmp_path)
    assert sorted(path.name for path in again) == sorted(path.name for path in debs.values())
    for path in again:
        assert path.read_bytes() == debs[path.name.split("_")[0]].read_bytes(), path.name


def test_client_and_daemon_are_split(debs: dict[str, Path]) -> None:
    files = {name: deb_files(deb) for name, deb in debs.items()}
    modules = "/usr/lib/python3/dist-packages/"
    # The client package: the client, its page and docs, nothing that listens or starts.
    assert {f for f in files["lanchat"] if not f.startswith("/usr/share/doc/")} == {
        "/usr/bin/lanchat",
        "/usr/share/man/man1/lanchat.1.gz",
    }
    daemon = {f for f in files["lanchatd"] if not f.startswith("/usr/share/doc/")}
    assert daemon == {
        "/etc/lanchatd/lanchatd.toml",
        "/lib/systemd/system/lanchatd.service",
        "/lib/systemd/system/lanchatd.socket",
        "/lib/systemd/system/lanchatd-admin.socket",
        "/lib/systemd/system/lanchatd-web.socket",
        "/usr/bin/lanchatctl",
        "/usr/bin/lanchatd",
        "/usr/lib/sysusers.d/lanchatd.conf",
        "/usr/share/bash-completion/completions/lanchatctl",
        "/usr/share/man/man5/lanchatd.toml.5.gz",
        "/usr/share/man/man8/lanchatctl.8.gz",
        "/usr/share/man/man8/lanchatd.8.gz",
    }
    # The client's README sends its users to docs/protocol.md and docs/discovery.md.
    for doc in ("README.md", "protocol.md", "discovery.md"):
        assert f"/usr/share/doc/lanchat/{doc}.gz" in files["lanchat"]
    # The code is in one package only.
    assert not any(f.startswith(modules) for f in files["lanchat"] | files["lanchatd"])
    assert f"{modules}lanchatd/daemon/server.py" in files["python3-lanchat"]
    assert f"{modules}lanchatctl/cli.py" in files["python3-lanchat"]
    # The chat page the daemon serves ships with the modules, file for file.
    static = REPO / "lanchatd/daemon/web/static"
    for page_file in static.rglob("*"):
        if page_file.is_file():
            shipped = f"{modules}lanchatd/daemon/web/static/{page_file.relative_to(static)}"
            assert shipped in files["python3-lanchat"]


def test_conffile_sets_nothing(debs: dict[str, Path], tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", debs["lanchatd"], tmp_path], check=True, timeout=60)
    text = (tmp_path / "etc/lanchatd/lanchatd.toml").read_text()
    # Every section is there to uncomment a setting under, and every setting is commented out.
    assert tomllib.loads(text) == {section: {} for section in config.SCHEMA}
    assert "# port = 5001\n" in text


def man_page(debs: dict[str, Path], package: str, page: str, tmp_path: Path) -> str:
    """The roff source of ``page`` (e.g. ``man8/lanchatd.8``) as ``package`` ships it."""
    subprocess.run(["dpkg-deb", "-x", debs[package], tmp_path], check=True, timeout=60)
    return gzip.decompress((tmp_path / f"usr/share/man/{page}.gz").read_bytes()).decode()


def help_words(program: str) -> Counter[str]:
    """The options and hyphenated words of a program's --help, with click's wrapping undone."""
    text = subprocess.run(
        [Path(sys.executable).with_name(program), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "80"},  # as packaging/make-manpages runs it
    ).stdout
    text = re.sub(r"(\w-)\n\s+", r"\1", text)
    return Counter(re.findall(r"--\w[\w-]*|\w+(?:-\w+)+", text))


@pytest.mark.parametrize(
    ("package", "page", "program", "added"),
    [
        (
            "lanchatd",
            "man8/lanchatd.8",
            "lanchatd",
            {"--web-port", "--web-host", "--no-web", "--no-discovery", "--history-on-join"},
        ),
        ("lanchat", "man1/lanchat.1", "lanchat", {"--list", "--json"}),
    ],
)
def test_man_pages_carry_every_option_and_hyphenated_word_of_the_help(
    debs: dict[str, Path], tmp_path: Path, package: str, page: str, program: str, added: set[str]
) -> None:
    roff = man_page(debs, package, page, tmp_path)
    words = help_words(program)
    assert added <= set(words)
    # help2man joins a word click broke at its hyphen ("DNS-" / "SD" became "DNSSD").
    missing = sorted(w for w, n in words.items() if roff.count(w.replace("-", "\\-")) < n)
    assert missing == []


def test_lanchatd_page_names_the_state_it_keeps(debs: dict[str, Path], tmp_path: Path) -> None:
    roff = man_page(debs, "lanchatd", "man8/lanchatd.8", tmp_path)
    for path in ("/etc/lanchatd/lanchatd.toml", "/var/lib/lanchatd/bans.json"):
        assert path in roff
    assert "/var/lib/lanchatd/history.db" in roff


def test_lanchatctl_page_has_every_command(debs: dict[str, Path], tmp_path: Path) -> None:
    roff = man_page(debs, "lanchatd", "man8/lanchatctl.8", tmp_path)
    lanchatctl = Path(sys.executable).with_name("lanchatctl")
    listed = subprocess.run(
        [lanchatctl, "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    commands = re.findall(r"^  ([a-z]+) ", listed.partition("Commands:")[2], re.MULTILINE)
    assert {"url", "history", "purge", "who"} <= set(commands)
    for command in commands:
        assert f'.SS "lanchatctl {command}"' in roff


def test_config_page_has_every_section_and_key(debs: dict[str, Path], tmp_path: Path) -> None:
    roff = man_page(debs, "lanchatd", "man5/lanchatd.toml.5", tmp_path)
    for section, keys in config.SCHEMA.items():
        text = roff.partition(f'.SH "[{section}]"\n')[2].partition(".SH ")[0]
        missing = [key for key in keys if f"\\fB{key}\\fR = " not in text]
        assert missing == [], section
