"""Write lanchatd.toml(5) from the commented example configuration.

The example file is the one place where every key, its default and its meaning are written
down (tests/test_example_config.py keeps it complete), so the man page is made from it rather
than kept beside it. The date comes from SOURCE_DATE_EPOCH, so a rebuild is byte-identical.

    python3 packaging/config-manpage.py lanchatd.example.toml VERSION >lanchatd.toml.5
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

SECTION = re.compile(r"^\[(?P<name>[a-z_]+)\]$")
# A setting, also one shown commented out ("# socket = ...").
SETTING = re.compile(r"^(?:# ?)?(?P<key>[a-z_]+) = (?P<value>.+)$")

HEADER = """\
.TH LANCHATD.TOML 5 "{date}" "lanchatd {version}" "File Formats"
.SH NAME
lanchatd.toml \\- configuration file of lanchatd
.SH SYNOPSIS
.I /etc/lanchatd/lanchatd.toml
.SH DESCRIPTION
.BR lanchatd (8)
reads this TOML file at start (the system service passes it with
.BR \\-\\-config )
and again on
.B systemctl reload lanchatd
(SIGHUP). Every key is optional: the file installed with the package has every setting
commented out, showing its default.
"""

FOOTER = """\
.SH SEE ALSO
.BR lanchatd (8),
.BR lanchatctl (8),
.BR systemd.socket (5)
"""


def roff(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote that would be a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in {".", "'"} else text


def render(example: str, version: str, date: str) -> str:
    """The man page for the example configuration's text."""
    out = [HEADER.format(date=date, version=version)]
    notes: list[str] = []
    in_sections = False
    for line in example.splitlines():
        section = SECTION.match(line)
        setting = SETTING.match(line)
        if section:
            in_sections = True
            out.append(f'.SH "[{section["name"]}]"\n')
            out.extend(f"{roff(note)}\n" for note in notes)
            notes = []
        elif setting:
            out.append(f".TP\n\\fB{setting['key']}\\fR = {roff(setting['value'])}\n")
            out.extend(f"{roff(note)}\n" for note in notes)
            notes = []
        elif line.startswith("#"):
            notes.append(line.lstrip("#").strip())
        elif notes and not in_sections:
            # The file's opening comment: general rules, before the first section.
            out.append(".PP\n")
            out.extend(f"{roff(note)}\n" for note in notes)
            notes = []
    out.append(FOOTER)
    return "".join(out)


def main() -> None:
    example, version = Path(sys.argv[1]), sys.argv[2]
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", example.stat().st_mtime))
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch))
    sys.stdout.write(render(example.read_text(encoding="utf-8"), version, date))


if __name__ == "__main__":
    main()
