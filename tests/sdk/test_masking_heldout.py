"""Masking on a held-out corpus (written after the detectors, never tuned on): secrets inside URLs and headers,
PII inside JSON inside strings, e-mails inside URLs, and clean text full of numbers that are not PII (order
totals, versions, dates, timestamps, ports, ids).

Measured when written (one fix made: URL-encoded e-mails, ``jane%40example.com``, were missed):
recall 24/24 = 1.00, false positives 1/32 = 3.1% (``order 1234 5678 9012`` reads as a phone number).
A secret counts as caught when its value does not survive, whatever kind it was labelled with (the password of a
``postgres://user:pass@host`` URL is caught by the e-mail detector)."""

from __future__ import annotations

import agentwatch
from agentwatch._masking import Masker

HELD_OUT_PII: list[tuple[str, str]] = [
    ("callback https://x.example/cb?api_key=sk-proj-Zx81kQ2mN5pR7tV9wY3bC6dF&user=7",
     "sk-proj-Zx81kQ2mN5pR7tV9wY3bC6dF"),
    ("GET https://api.example.com/v1/items?access_token=ya29a0AfH6SMBx3kLmN8pQ HTTP/1.1", "ya29a0AfH6SMBx3kLmN8pQ"),
    ("curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlMTIz' https://api.example.com",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlMTIz"),
    ('headers={"Authorization": "Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0"}', "9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
    ('tool args: {"query": "refund", "customer": {"email": "li.wei@example.cn", "phone": "+86 138 0013 8000"}}',
     "li.wei@example.cn"),
    ('tool args: {"query": "refund", "customer": {"email": "li.wei@example.cn", "phone": "+86 138 0013 8000"}}',
     "+86 138 0013 8000"),
    ('"{\\"user\\": \\"ana@shop.example\\", \\"card\\": \\"4242 4242 4242 4242\\"}"', "ana@shop.example"),
    ('"{\\"user\\": \\"ana@shop.example\\", \\"card\\": \\"4242 4242 4242 4242\\"}"', "4242 4242 4242 4242"),
    ("https://app.example.com/users/john.smith@example.org/profile", "john.smith@example.org"),
    ("mailto:support+tickets@help.example.com?subject=Refund", "support+tickets@help.example.com"),
    ("https://x.example/reset?email=jane%40example.com", "jane%40example.com"),
    ("postgres://admin:S3cr3tPassw0rd@db.internal.example:5432/prod", "S3cr3tPassw0rd"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("X-Api-Key: 3f9c1b7e5a2d4c6e8f0a1b3c5d7e9f1a", "3f9c1b7e5a2d4c6e8f0a1b3c5d7e9f1a"),
    ("my ssn is 123-45-6789 ok", "123-45-6789"),
    ("Call me at (555) 867-5309 after 5pm", "867-5309"),
    ("card number: 4000-0566-5566-5556", "4000-0566-5566-5556"),
    ("IBAN: GB29 NWBK 6016 1331 9268 19", "GB29 NWBK 6016 1331 9268 19"),
    ("client 2001:db8::ff00:42:8329 connected", "2001:db8::ff00:42:8329"),
    ("slack token xoxp-1234567890-0987654321-abcdefABCDEF123", "xoxp-1234567890-0987654321-abcdefABCDEF123"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF",
     "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF"),
    ("forwarded for=198.51.100.23;proto=https", "198.51.100.23"),
    ('{"messages": [{"role": "user", "content": "my email is bob.k@corp.example, pls refund"}]}', "bob.k@corp.example"),
    ("webhook https://hooks.example.com/services?token=tkn_8f7e6d5c4b3a2918&x=1", "tkn_8f7e6d5c4b3a2918"),
]  # fmt: skip

HELD_OUT_CLEAN: list[str] = [
    "Order #100234 total $1,249.50 (3 items) shipped 2024-06-01",
    "Upgraded from v2.14.3 to v2.15.0 on 2024-05-30",
    "unix time 1717171717 = 2024-05-31T16:08:37Z",
    "timestamp 1717171717123 ms",
    "listening on 0.0.0.0:8080 and :9090",
    "connect to db.internal:5432 timeout 30s",
    "invoice total 4,250.00 EUR due 30.06.2024",
    "the build 20240601.3 passed 1342 of 1350 tests",
    "ticket JIRA-4521 blocked by JIRA-4519",
    "latency p50=120ms p95=845ms p99=1203ms",
    'response {"id": 12345678, "amount": 99.95, "currency": "USD"}',
    '{"tokens": {"input": 1200, "output": 80}, "cost": 0.00042}',
    "https://docs.example.com/api/v2/keys?page=2&per_page=50",
    "https://example.com/search?q=token+limits&sort=desc",
    "GET /api/v1/traces/5b8efff798038103d269b633813fc60c 200",
    "span id eee19b7ec3c1b174 parent 00f067aa0ba902b7",
    "order 1234 5678 9012 (three boxes)",
    "between 2024-01-01 and 2024-12-31 we had 12,345 tasks",
    "image 1920x1080, 24 fps, 8 bit",
    "Python 3.12.1 (main, Dec  7 2023, 12:00:00)",
    "npm install lodash@4.17.21",
    "uuid 550e8400-e29b-41d4-a716-446655440000",
    "the secret sauce is patience",
    "set max_tokens to 2048 and retry",
    "reference number 2024-000123-45",
    "call duration 00:12:45",
    "coordinates 48.8566, 2.3522",
    "the password field must be 8 characters",
    "model gpt-4.1-mini-2025-04-14",
    "version 10.0.22631.3593",
    '"{\\"step\\": 3, \\"of\\": 12, \\"eta_s\\": 45.5}"',
    "retry after 120 seconds; 3 of 5 attempts left",
]


def test_held_out_recall_and_false_positives() -> None:
    masker = Masker(agentwatch.Redaction())
    missed = [(text, pii) for text, pii in HELD_OUT_PII if pii in masker.mask("k", text)]
    false = [(text, masker.mask("k", text)) for text in HELD_OUT_CLEAN if masker.mask("k", text) != text]
    recall = 1 - len(missed) / len(HELD_OUT_PII)
    fp_rate = len(false) / len(HELD_OUT_CLEAN)
    print(f"\nheld-out masking: recall {recall:.2f} ({len(HELD_OUT_PII)} PII/secrets), false positives {fp_rate:.3f} "
          f"({len(HELD_OUT_CLEAN)} clean); missed {missed}; false {false}")  # fmt: skip
    # conservative bounds (measured: 1.00 and 0.031), so a small regression fails but the corpus is not a spec
    assert recall >= 0.95, missed
    assert fp_rate <= 0.07, false


def test_url_encoded_email_in_a_query_string_is_masked() -> None:
    masker = Masker(agentwatch.Redaction())
    assert masker.mask("k", "https://x.example/reset?email=jane%40example.com&x=1") == (
        "https://x.example/reset?email=[REDACTED:email]&x=1"
    )
    assert masker.mask("k", "progress 100%40 done") == "progress 100%40 done"  # not an address
