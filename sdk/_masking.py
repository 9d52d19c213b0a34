"""PII and secret masking for exported attribute values.

One compiled alternation, ordered so that the most specific detector wins at a position; card numbers are kept
only if they pass the Luhn check, IBANs only if their mod-97 checksum holds, SSNs only outside the reserved ranges,
phone numbers only with 7-15 digits and a phone-like shape. A match becomes ``[REDACTED:<kind>]``. It runs on the
exporter's thread, not the agent's; recall and false positives are measured on a labelled corpus in the tests.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable

from ._options import REDACTION_KINDS, Redaction

logger = logging.getLogger("agentwatch")

_DETECTORS: list[tuple[str, str]] = [
    # secrets first: they often contain digits that would look like other things
    (
        "private_key",
        r"-----BEGIN[A-Z ]{0,20} PRIVATE KEY-----[\s\S]{0,8000}?-----END[A-Z ]{0,20} PRIVATE KEY-----",
    ),
    ("bearer", r"\b(?:[Bb]earer|BEARER|[Bb]asic|BASIC)[ \t]+[A-Za-z0-9\-._~+/]{8,}=*"),
    (
        "api_key",
        r"(?<![A-Za-z0-9])(?:"
        r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"
        r"|(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}"
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
        r"|gh[pousr]_[A-Za-z0-9]{30,}"
        r"|github_pat_[A-Za-z0-9_]{22,}"
        r"|xox[abposr]-[A-Za-z0-9\-]{10,}"
        r"|AIza[0-9A-Za-z_\-]{35}"
        r"|glpat-[0-9A-Za-z_\-]{20,}"
        r"|hf_[A-Za-z0-9]{30,}"
        r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
        r")",
    ),
    (
        "secret_kv",
        r"(?i:(?:api[_\-]?key|access[_\-]?key|private[_\-]?key|secret|token|passw(?:or)?d|pwd))"
        r"[\"']?[ \t]*[:=][ \t]*[\"']?(?P<kv>[^\s\"',;{}<>\[\]]{6,})",
    ),
    ("email", r"(?<![\w.+\-])[A-Za-z0-9._%+\-]{1,64}(?:@|%40)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}\.)+[A-Za-z]{2,24}\b"),
    ("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
    ("card", r"(?<![\d\-])(?<!\d\.)\d(?:[ \-]?\d){12,18}(?![\d\-]|\.\d)"),
    ("ssn", r"(?<![\d\-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d\-])"),
    (
        "ip",
        r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])"
        r"|(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])",  # IPv6 candidates, checked below
    ),
    (
        "phone",
        r"(?<![\w+\-./])(?:\+|00)\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{2,4}){1,4}(?![\w\-]|\.\d)"
        r"|(?<![\w+\-./])\(\d{2,4}\)[ .\-]?\d{2,4}(?:[ .\-]?\d{2,4}){1,3}(?![\w\-]|\.\d)"
        r"|(?<![\w+\-./])\d{2,4}(?:[ .\-]\d{2,4}){2,4}(?![\w\-]|\.\d)",
    ),
]

# which public kind each detector belongs to
_KIND = {"private_key": "api_key", "secret_kv": "api_key"}
_DOTTED_US = re.compile(r"\d{3}\.\d{3}\.\d{4}")
_DATE = re.compile(r"\d{4}[\-./ ]\d{1,2}[\-./ ]\d{1,2}|\d{1,2}[\-./ ]\d{1,2}[\-./ ]\d{4}")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn(digits)


def _iban(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1
    except ValueError:
        return False


def _ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_loopback)  # 0.0.0.0, 127.0.0.1, ::1 say nothing about anyone


def _phone(text: str) -> bool:
    digits = sum(char.isdigit() for char in text)
    if not 7 <= digits <= 15:
        return False
    if text[0] in "+(" or text.startswith("00"):
        return True
    if _DATE.fullmatch(text):
        return False
    if _DOTTED_US.fullmatch(text):
        return True
    separators = {char for char in text if not char.isdigit()}
    # bare groups need a phone-like shape: one kind of separator (not dots: versions), an area code and a number
    last = len(text) - len(text.rstrip("0123456789"))
    return len(separators) == 1 and "." not in separators and digits >= 9 and (last >= 4 or digits >= 10)


_VALIDATORS: dict[str, Callable[[str], bool]] = {"card": _card, "iban": _iban, "ip": _ip, "phone": _phone}


_DASH_PREFIXES = ("sk-", "xox", "glpat-")
_UNDERSCORE_PREFIXES = ("sk_", "rk_", "pk_", "hp_", "ho_", "hu_", "hs_", "hr_", "github_pat_", "hf_")
_OTHER_PREFIXES = ("AKIA", "ASIA", "AIza", "eyJ", "PRIVATE KEY", "earer", "EARER", "asic ", "ASIC ")
_KV_WORDS = (
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "private_key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "token",
)
_KV_TAIL = re.compile(r"[\"']?[ \t]*[:=][ \t]*[\"']?(?P<kv>[^\s\"',;{}<>\[\]]{6,})")
# digit clusters: where card numbers, SSNs, IPv4 addresses, phone numbers and IBANs can be (one cheap pass)
_CLUSTER = re.compile(r"[\d+(][\d \-.()]{6,}")
_IPV6_GATE = re.compile(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:")


def _secret_gate(s: str) -> bool:
    return (
        ("-" in s and any(prefix in s for prefix in _DASH_PREFIXES))
        or ("_" in s and any(prefix in s for prefix in _UNDERSCORE_PREFIXES))
        or any(prefix in s for prefix in _OTHER_PREFIXES)
    )


def _compile(names: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _DETECTORS if name in names))


_SECRETS_RE = _compile(("private_key", "bearer", "api_key"))
_KV_RE = _compile(("secret_kv",))
_EMAIL_RE = _compile(("email",))
_IBAN_RE = _compile(("iban",))
_DIGITS_RE = _compile(("card", "ssn", "ip", "phone"))
_IP_RE = _compile(("ip",))


class Masker:
    """Masks one string at a time; ``mask(key, value)`` returns ``value`` itself when nothing was found.

    Each family of detectors runs only when a cheap C-speed check says it can match (a ``@`` for e-mail, a
    key prefix for API keys, a run of digits for cards, SSNs, IPs and phones), so plain prose costs a few passes.
    """

    def __init__(self, options: Redaction) -> None:
        kinds = frozenset(options.kinds) & REDACTION_KINDS
        self._secrets = bool(kinds & {"api_key", "bearer"})
        self._kv = "api_key" in kinds
        self._email = "email" in kinds
        self._iban = "iban" in kinds
        self._digits = bool(kinds & {"card", "ssn", "ip", "phone"})
        self._kinds = kinds
        self._extra = [(label, re.compile(pattern)) for label, pattern in options.patterns.items()]
        self._callback = options.callback

    def _collect(self, regex: re.Pattern[str], text: str, found: list[tuple[int, int, str]], base: int = 0) -> None:
        for match in regex.finditer(text):
            name = match.lastgroup or ""
            kind = _KIND.get(name, name)
            if kind not in self._kinds:
                continue
            if name == "secret_kv":
                start, end = match.span("kv")
                found.append((base + start, base + end, "api_key"))
                continue
            validator = _VALIDATORS.get(name)
            if validator is not None and not validator(match.group()):
                continue
            found.append((base + match.start(), base + match.end(), kind))

    def _find(self, s: str) -> list[tuple[int, int, str]]:
        found: list[tuple[int, int, str]] = []
        if self._secrets and _secret_gate(s):
            self._collect(_SECRETS_RE, s, found)
        if self._kv and ("=" in s or ":" in s):
            self._secret_values(s, found)
        if self._email and ("@" in s or "%40" in s):  # %40: an address URL-encoded in a query string
            self._collect(_EMAIL_RE, s, found)
        if self._digits or self._iban:
            for cluster in _CLUSTER.finditer(s):
                start, end = cluster.span()
                # widen by one character each side so the detectors' boundary checks see the context
                lo, hi = max(start - 1, 0), min(end + 1, len(s))
                if self._digits:
                    self._collect(_DIGITS_RE, s[lo:hi], found, lo)
                if self._iban:  # an IBAN's country code and letters can be up to 34 characters around its digits
                    lo, hi = max(start - 34, 0), min(end + 34, len(s))
                    self._collect(_IBAN_RE, s[lo:hi], found, lo)
        if "ip" in self._kinds and ":" in s and s.count(":") - s.count('":') >= 2 and _IPV6_GATE.search(s):
            self._collect(_IP_RE, s, found)
        return found

    @staticmethod
    def _secret_values(s: str, found: list[tuple[int, int, str]]) -> None:
        # "password=...", "api_key": "...", "x-auth-token: ...": find the key words, then match the value after them
        lowered = s.lower() if s.isascii() else None
        if lowered is None:
            for match in _KV_RE.finditer(s):
                found.append((*match.span("kv"), "api_key"))
            return
        for word in _KV_WORDS:
            index = lowered.find(word)
            while index >= 0:
                if (tail := _KV_TAIL.match(s, index + len(word))) is not None:
                    found.append((*tail.span("kv"), "api_key"))
                index = lowered.find(word, index + 1)

    def mask(self, key: str, value: str) -> str:
        masked = value
        if len(value) >= 6:
            found = self._find(value)
            if found:
                found.sort(key=lambda item: (item[0], -item[1]))
                pieces: list[str] = []
                position = 0
                for start, end, kind in found:
                    if start < position:  # overlaps one already masked
                        continue
                    pieces.append(value[position:start])
                    pieces.append(f"[REDACTED:{kind}]")
                    position = end
                pieces.append(value[position:])
                masked = "".join(pieces)
        for label, regex in self._extra:
            masked = regex.sub(f"[REDACTED:{label}]", masked)
        if self._callback is not None:
            try:
                masked = str(self._callback(key, masked))
            except Exception:  # noqa: BLE001 - fail closed: a broken callback must not leak the value
                logger.warning("agentwatch: the redaction callback failed on %r; the value is dropped", key)
                return "[REDACTED]"
        return value if masked == value else masked
