#!/usr/bin/env python3
"""Static checks for our Dockerfiles (no engine needed): every base image pinned (exact tag with a
version number, or a digest; `scratch` allowed), the final stage runs as a non-root user, no
credential baked in through ENV/ARG, nothing fetched with ADD from a URL. One finding per line:
`FILE:LINE: what is wrong`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

SECRET = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|APIKEY|PRIVATE_KEY|CREDENTIALS?)", re.I)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def instructions(text: str):
    """(line number, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        yield start, word.upper(), rest.strip()
        buf = ""


def image_pinned(ref: str, stages: set[str]) -> str | None:
    if ref == "scratch" or ref in stages or DIGEST.search(ref):
        return None
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"base image {ref!r} has no tag or digest"
    tag = last.rsplit(":", 1)[1]
    if tag == "latest" or not re.search(r"\d", tag):
        return f"base image {ref!r}: tag {tag!r} moves; use a version tag or a digest"
    return None


def check(path: Path) -> list[str]:
    errs, stages, user, saw_from = [], set(), None, False
    for n, ins, args in instructions(path.read_text()):
        where = f"{path}:{n}"
        if ins == "FROM":
            saw_from = True
            words = args.split()
            words = [w for w in words if not w.startswith("--")]
            if (e := image_pinned(words[0], stages)):
                errs.append(f"{where}: {e}")
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2])
            user = None  # USER does not carry over into a new stage
        elif ins == "USER":
            user = args.split(":")[0]
        elif ins in ("ENV", "ARG"):
            for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)(=|\s+)(\S*)", args):
                if SECRET.search(m.group(1)) and m.group(3):
                    errs.append(f"{where}: {ins} {m.group(1)} bakes a credential into the image")
        elif ins == "ADD" and re.search(r"https?://", args):
            errs.append(f"{where}: ADD from a URL is unverified; fetch with a checksum in RUN or COPY")
        elif ins == "COPY" and re.search(r"(\.env\b|id_rsa|\.pem\b|credentials)", args):
            errs.append(f"{where}: COPY of a credential file")
    if not saw_from:
        errs.append(f"{path}: no FROM")
    elif user is None:
        errs.append(f"{path}: final stage has no USER (it would run as root)")
    elif user in ("root", "0"):
        errs.append(f"{path}: final stage runs as root")
    return errs


def main(argv: list[str]) -> int:
    errs = [e for f in argv for e in check(Path(f))]
    for e in errs:
        print(e, file=sys.stderr)
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
