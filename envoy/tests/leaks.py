"""Does a header value name or encode a pool address? The forms a client could decode:

- the text `ip:port` (also percent-encoded, or with another short separator between ip and port);
- the hex of that text, or of the packed address (4 IPv4 bytes + 2 port bytes, big endian);
- base64 (standard or URL-safe, padded or not) of either;
- any of these inside a token of the value (split at characters no encoding here uses), decoded.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct

# Characters that separate tokens in a header value (hex and base64 use none of them).
_SEPARATORS = re.compile(r"[^A-Za-z0-9+/=_-]+")


def _forms(address: str) -> list[bytes]:
    """Byte strings whose presence (raw or decoded) reveals `address`."""
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    text = address.encode()
    forms = [text]
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        forms.append(ip.packed + struct.pack(">H", port))
    except ValueError:
        pass
    return forms


def _text_patterns(address: str) -> list[re.Pattern[str]]:
    host, _, port = address.rpartition(":")
    patterns = [re.compile(re.escape(host) + r"(?:\D{1,3}|%3[aA])" + re.escape(port) + r"(?!\d)")]
    for form in _forms(address):
        patterns.append(re.compile(re.escape(form.hex()), re.IGNORECASE))
        for enc in (base64.b64encode(form), base64.urlsafe_b64encode(form)):
            patterns.append(re.compile(re.escape(enc.decode().rstrip("="))))
    return patterns


def _decodings(token: str) -> list[bytes]:
    out = []
    if len(token) % 2 == 0 and re.fullmatch(r"[0-9a-fA-F]+", token):
        out.append(binascii.unhexlify(token))
    padded = token + "=" * (-len(token) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            out.append(decode(padded))
        except (binascii.Error, ValueError):
            pass
    return out


def reveals(value: str, address: str) -> bool:
    """Whether the header value names or encodes `address` in one of the forms above."""
    if any(p.search(value) for p in _text_patterns(address)):
        return True
    forms = _forms(address)
    for token in _SEPARATORS.split(value):
        if len(token) < 8:
            continue
        for decoded in _decodings(token):
            if any(f in decoded for f in forms):
                return True
    return False


def leaking_headers(header_lines: list[tuple[str, str]], pool: list[str]) -> dict[str, list[str]]:
    """{header name: the pool addresses its value reveals}, for every header that reveals one."""
    found: dict[str, list[str]] = {}
    for name, value in header_lines:
        hits = [a for a in pool if reveals(value, a)]
        if hits:
            found.setdefault(name, []).extend(hits)
    return found
