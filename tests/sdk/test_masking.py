"""Masking: a labelled corpus (recall and false-positive rate asserted), options, and the export path."""

from __future__ import annotations

import json

import pytest

import agentwatch
from agentwatch import _attributes as A
from agentwatch._masking import Masker
from agentwatch.testing import CapturedSpans, capture_spans

# (text, the PII in it that must not survive, kind). Fake values: test card numbers, documentation IPs, example keys.
POSITIVES: list[tuple[str, str, str]] = [
    ("Please email me at jane.doe@example.com about it", "jane.doe@example.com", "email"),
    ("contact: J.Smith+billing@mail.example.co.uk", "J.Smith+billing@mail.example.co.uk", "email"),
    ('{"email":"ops-team@corp.example.org"}', "ops-team@corp.example.org", "email"),
    ("reply to <first.last@sub.domain.example.io>", "first.last@sub.domain.example.io", "email"),
    ("user_42@example.net wrote:", "user_42@example.net", "email"),
    ("My card is 4111 1111 1111 1111, exp 12/27", "4111 1111 1111 1111", "card"),
    ("card=5500-0000-0000-0004", "5500-0000-0000-0004", "card"),
    ("amex 378282246310005 please", "378282246310005", "card"),
    ("Discover 6011111111111117.", "6011111111111117", "card"),
    ("charged to 4012888888881881 yesterday", "4012888888881881", "card"),
    ("mastercard 5105 1051 0510 5100", "5105 1051 0510 5100", "card"),
    ("diners 30569309025904", "30569309025904", "card"),
    ("JCB: 3530111333300000", "3530111333300000", "card"),
    ("IBAN DE89 3704 0044 0532 0130 00 for the refund", "DE89 3704 0044 0532 0130 00", "iban"),
    ("pay to GB82WEST12345698765432", "GB82WEST12345698765432", "iban"),
    ("FR1420041010050500013M02606 is the account", "FR1420041010050500013M02606", "iban"),
    ("iban: NL91ABNA0417164300", "NL91ABNA0417164300", "iban"),
    ("ES91 2100 0418 4502 0005 1332", "ES91 2100 0418 4502 0005 1332", "iban"),
    ("CH9300762011623852957 (Swiss)", "CH9300762011623852957", "iban"),
    ("BE68539007547034", "BE68539007547034", "iban"),
    ("SSN 078-05-1120 on file", "078-05-1120", "ssn"),
    ("ssn: 219-09-9999", "219-09-9999", "ssn"),
    ('{"ssn": "457-55-5462"}', "457-55-5462", "ssn"),
    ("call me on +1 (415) 555-0132 tomorrow", "+1 (415) 555-0132", "phone"),
    ("office: 415-555-0132", "415-555-0132", "phone"),
    ("UK line +44 20 7946 0958", "+44 20 7946 0958", "phone"),
    ("Tel. (212) 555 1234", "(212) 555 1234", "phone"),
    ("+33 1 42 68 53 00 is Paris", "+33 1 42 68 53 00", "phone"),
    ("mobile +91 98765 43210", "+91 98765 43210", "phone"),
    ("whatsapp +14155550132", "+14155550132", "phone"),
    ("Berlin 0049 30 901820", "0049 30 901820", "phone"),
    ("phone 650.555.0199", "650.555.0199", "phone"),
    ("call 020 7946 0958", "020 7946 0958", "phone"),
    ("client ip 203.0.113.42 blocked", "203.0.113.42", "ip"),
    ("from 192.168.1.20:5432", "192.168.1.20", "ip"),
    ("x-forwarded-for: 198.51.100.7", "198.51.100.7", "ip"),
    ("v6 2001:db8:85a3::8a2e:370:7334 seen", "2001:db8:85a3::8a2e:370:7334", "ip"),
    ("link-local fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a", "ip"),
    ("full 2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:0db8:0000:0000:0000:ff00:0042:8329", "ip"),
    ("OPENAI_API_KEY=sk-proj-Abc123def456Ghi789jkl012MNO345", "sk-proj-Abc123def456Ghi789jkl012MNO345", "api_key"),
    (
        "key sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789",
        "api_key",
    ),
    ("aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "api_key"),
    ("token ghp_16C7e42F292c6912E7710c838347Ae178B4a", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "api_key"),
    ("slack xoxb-2048-1234567890-abcdefABCDEF", "xoxb-2048-1234567890-abcdefABCDEF", "api_key"),
    ("google AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890abcdefghijklmnopqrstu", "api_key"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "api_key"),
    ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "api_key"),
    ("glpat-xxxxxxxxxxxxxxxxxxxx1234", "glpat-xxxxxxxxxxxxxxxxxxxx1234", "api_key"),
    (
        "jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV",
        "api_key",
    ),
    ("password=hunter2isnotsafe", "hunter2isnotsafe", "api_key"),
    ('{"api_key": "a1b2c3d4e5f6g7h8"}', "a1b2c3d4e5f6g7h8", "api_key"),
    ("client_secret: 9s8d7f6g5h4j", "9s8d7f6g5h4j", "api_key"),
    ("Authorization: Bearer abc.def.ghi-jkl_mno123", "abc.def.ghi-jkl_mno123", "bearer"),
    ("authorization: bearer 0123456789abcdef0123", "0123456789abcdef0123", "bearer"),
    ("Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "bearer"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\n-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEA1234",
        "api_key",
    ),
    ("Customer Ana (ana@shop.example, +49 30 1234 5678) paid by 4111111111111111", "ana@shop.example", "email"),
    ("Customer Ana (ana@shop.example, +49 30 1234 5678) paid by 4111111111111111", "+49 30 1234 5678", "phone"),
    ("Customer Ana (ana@shop.example, +49 30 1234 5678) paid by 4111111111111111", "4111111111111111", "card"),
]

# must come out unchanged: what agent traffic is full of
NEGATIVES: list[str] = [
    "The order 48213 was placed on 2024-03-02 and shipped on 2024-03-05.",
    "Released version 3.11.7 (build 2024.03.15).",
    "model gpt-4o-2024-08-06 answered in 1.37 s",
    "claude-3-5-sonnet-20241022 used 12345 input tokens",
    "request id 123e4567-e89b-12d3-a456-426614174000",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "total $1,299.99 incl. 19% VAT",
    "timestamp 2024-03-15T14:22:01Z",
    "at 14:22:01 the job finished",
    "ORD-2024-000123 is pending",
    "tracking 1Z999AA10123456784",
    "coordinates 37.7749, -122.4194",
    "listening on localhost:8080",
    "HTTP/1.1 200 OK",
    "max_tokens: 1024, temperature=0.7",
    '{"max_tokens": 4096, "top_p": 0.95}',
    "1,234,567 rows scanned",
    "pi is 3.14159265",
    "chatcmpl-AbC123xyz",
    "msg_01XFDUDYJgAACzvnptvVoYEL",
    "call_mszuSIzqtI65i1wAUOE8w5H4",
    "https://docs.example.com/v2/api/reference",
    "/var/lib/agentwatch/data/part-0001.parquet",
    "color #ff0000 and #00ff00",
    "k8s v1.29.3 on node pool-2",
    "between 10 and 20 items",
    "zip code 94103",
    "SKU-48213-BLK size 42",
    "ratio 16:9 at 1920x1080",
    "Error 404: page not found",
    "retry in 30 seconds (attempt 3 of 5)",
    "The meeting is on 15.03.2024 at 10:30",
    "dates 03/15/2024 and 2024/03/15",
    "ISBN 978-0-306-40615-7",
    "invoice INV-000123456",
    "P99 latency 2345 ms over 10000 spans",
    "keyboard shortcut Ctrl+Shift+P",
    "temperature: 21.5 C, humidity 40%",
    "the user has 3 open tickets and 12 closed ones",
    "python 3.11 and numpy 1.26.4",
    "account tier: gold; since 2019",
    "use the search tool then summarise",
    '[{"role":"user","parts":[{"type":"text","content":"Where is my order?"}]}]',
    "score 0.82, threshold 0.75",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "batch 512 of 1024 spans",
    "tokens: 1500 prompt / 300 completion",
    "password reset link sent",
    "the api key rotation policy is 90 days",
    "bearer of bad news",
    "task escalated to a human after 3 attempts",
    "port 5432 is Postgres, 6379 is Redis",
    "2024 Q1 revenue 12.5M",
    "chapter 7, page 123-125",
    "EAN 4006381333931",
    "range 100-200-300",
    "Windows 10.0.19045",
    "0.0.0.0/0 route",
    "version 1.2.3.4-beta",
    "SELECT * FROM otel_traces WHERE duration > 1000",
]


def _measure(masker: Masker) -> tuple[float, float, list[str], list[str]]:
    missed = [f"{kind}: {pii!r} in {text!r}" for text, pii, kind in POSITIVES if pii in masker.mask("k", text)]
    false = [f"{text!r} -> {masker.mask('k', text)!r}" for text in NEGATIVES if masker.mask("k", text) != text]
    return 1 - len(missed) / len(POSITIVES), len(false) / len(NEGATIVES), missed, false


def test_corpus_recall_and_false_positives() -> None:
    recall, false_positive_rate, missed, false = _measure(Masker(agentwatch.Redaction()))
    print(
        f"masking corpus: recall {recall:.3f} ({len(POSITIVES)} PII), false positives {false_positive_rate:.3f} "
        f"({len(NEGATIVES)} clean strings); missed {missed}; false {false}"
    )
    assert recall >= 0.95, missed
    assert false_positive_rate <= 0.05, false


def test_every_kind_is_labelled_in_the_corpus() -> None:
    assert {kind for _, _, kind in POSITIVES} == set(agentwatch.Redaction().kinds)


def test_masked_kind_is_named() -> None:
    masker = Masker(agentwatch.Redaction())
    assert masker.mask("k", "mail jane@example.com now") == "mail [REDACTED:email] now"
    assert masker.mask("k", "card 4111 1111 1111 1112") == "card 4111 1111 1111 1112"  # fails Luhn: not a card


def test_kinds_patterns_and_callback() -> None:
    only_email = Masker(agentwatch.Redaction(kinds=frozenset({"email"})))
    assert only_email.mask("k", "jane@example.com 4111111111111111") == "[REDACTED:email] 4111111111111111"
    custom = Masker(
        agentwatch.Redaction(
            patterns={"employee": r"EMP-\d{6}"}, callback=lambda key, value: value.replace("Ana", "***")
        )
    )
    assert custom.mask("k", "Ana is EMP-123456") == "*** is [REDACTED:employee]"

    def broken(key: str, value: str) -> str:
        raise RuntimeError("bug in user code")

    assert Masker(agentwatch.Redaction(callback=broken)).mask("k", "anything") == "[REDACTED]"  # fail closed


def test_bad_redaction_options_fail_fast() -> None:
    with pytest.raises(agentwatch.ConfigError):
        agentwatch.Redaction(kinds=frozenset({"dna"}))
    with pytest.raises(agentwatch.ConfigError):
        agentwatch.Redaction(patterns={"bad": "("})


def test_exported_attributes_events_and_status_are_masked(agentwatch_spans: CapturedSpans) -> None:
    @agentwatch.tool
    def send_mail(to: str, body: str) -> str:
        raise PermissionError(f"mailbox {to} is full")

    with pytest.raises(PermissionError):
        with agentwatch.task("t", user_id="jane@example.com"):
            send_mail("jane@example.com", "card 4111111111111111")
    tool = agentwatch_spans.one("execute_tool send_mail")
    assert json.loads(tool.attributes[A.GEN_AI_TOOL_CALL_ARGUMENTS]) == {
        "to": "[REDACTED:email]",
        "body": "card [REDACTED:card]",
    }
    assert "jane@" not in tool.status.description
    assert all("jane@" not in str(value) for event in tool.events for value in event.attributes.values())
    assert agentwatch_spans.one("invoke_agent t").attributes[A.USER_ID] == "[REDACTED:email]"
    # identifiers are never masked (a hash is not a phone number)
    assert len(tool.attributes[A.TOOL_ARGS_HASH]) == 16


def test_redact_off_and_truncation() -> None:
    with capture_spans(redact=False, max_content_chars=50) as spans:
        with agentwatch.tool("echo", arguments={"text": "jane@example.com " + "x" * 200}):
            pass
    arguments = spans.one("execute_tool echo").attributes[A.GEN_AI_TOOL_CALL_ARGUMENTS]
    assert arguments.startswith('{"text":"jane@example.com xxx')
    assert arguments.endswith("...[truncated 178 chars]")
