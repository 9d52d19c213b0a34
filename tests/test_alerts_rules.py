"""Rules files: validation errors that name the file, the rule and the field; the built-in rules; the
lifecycle (pending for ``for``, min samples, no change while the store is down) with a scripted reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.alerts import AlertConfigError, load
from agentwatch.alerts.engine import Engine
from agentwatch.alerts.sources import Reader, Window
from agentwatch.alerts.state import MemoryState

EXAMPLE = Path(__file__).resolve().parent.parent / "alerts" / "rules.example.yaml"
ENV = {"AGENTWATCH_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/services/x", "AGENTWATCH_PAGERDUTY_ROUTING_KEY": "k" * 32}


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    p = tmp_path / "rules.yaml"
    p.write_text(text)
    return load(p, env=ENV if env is None else env)


def test_the_example_rules_file_loads():
    c = load(EXAMPLE, env=ENV)
    assert len(c.rules) == 10 and {"slack", "pagerduty", "console", "log"} <= set(c.channels)
    assert c.interval == 30 and c.inhibit[0].equal == ("project",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules:\n  - {name: a, metric: latency_ms.llm.p999, threshold: 1}\n",
         "rule 'a': field 'metric': unknown metric 'latency_ms.llm.p999'"),
        ("rules:\n  - {name: a, metric: error_rate, threshold: high}\n",
         "rule 'a': field 'threshold': must be a number"),
        ("rules:\n  - {name: a, metric: error_rate, threshold: 1, for: soon}\n",
         "rule 'a': field 'for': expected a duration"),
        ("rules:\n  - {name: a, metric: error_rate, threshold: 1, channels: [teams]}\n",
         "rule 'a': field 'channels': unknown channel 'teams'"),
        ("rules:\n  - {name: a, metric: error_rate, threshold: 1, group_by: [model]}\n",
         "rule 'a': field 'group_by': group_by ['model'] is not served for error_rate"),
        ("rules:\n  - {name: a, detector: loops}\n", "rule 'a': field 'detector': unknown detector 'loops'"),
        ("rules:\n  - {name: a, detector: loop, params: {repeats: 1}}\n",
         "rule 'a': field 'params.repeats': must be between 2 and 100"),
        ("rules:\n  - {name: a, detector: loop, threshold: 3}\n", "rule 'a': field 'threshold': only threshold"),
        ("rules:\n  - {name: a, metric: tasks, threshold: 1, severity: urgent}\n",
         "rule 'a': field 'severity': must be one of critical, error, warning, info"),
        ("rules:\n  - {name: a, metric: tasks, threshold: 1}\n  - {name: a, metric: tasks, threshold: 2}\n",
         "rule 'a': field 'name': duplicate"),
        ("rules:\n  - {name: a, metric: tasks, threshold: 1, colour: red}\n", "rule 'a': field 'colour': unknown"),
        ("rules:\n  - {metric: tasks, threshold: 1}\n", "rule #1: field 'name': required"),
        ("channels:\n  s: {type: slack, url: 'https://hooks.slack.com/services/T/B/x'}\nrules: []\n",
         "channel 's': field 'url': a Slack webhook URL is a secret"),
        ("channels:\n  h: {type: webhook, url_env: NOT_SET_ANYWHERE}\nrules: []\n",
         "channel 'h': field 'url_env': environment variable NOT_SET_ANYWHERE is not set"),
        ("rules: {a: 1}\n", "field 'rules': must be a list"),
        ("rules: [\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_rules_file_errors_name_the_file_the_rule_and_the_field(tmp_path, text, expected):
    with pytest.raises(AlertConfigError) as e:
        _load(tmp_path, text)
    assert str(tmp_path / "rules.yaml") in str(e.value)
    assert expected in str(e.value)


def test_every_error_of_a_file_is_reported_at_once(tmp_path):
    with pytest.raises(AlertConfigError) as e:
        _load(tmp_path, "rules:\n  - {name: a, metric: nope, threshold: 1}\n  - {name: b, detector: nope}\n")
    assert "rule 'a'" in str(e.value) and "rule 'b'" in str(e.value)


def test_built_in_rules_only_when_a_channel_is_configured():
    assert load(None, env={}).rules == ()
    slack_only = load(None, env={"AGENTWATCH_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/x"})
    assert [r.name for r in slack_only.rules] == ["agent-loop", "cost-anomaly", "llm-p99-latency", "drift"]
    both = load(None, env=ENV)
    loop = both.rules[0]
    assert loop.channels == ("slack", "pagerduty") and loop.severity.value == "critical"
    assert all(r.channels == ("slack",) for r in both.rules[1:])  # only loops page
    assert load(None, env={**ENV, "AGENTWATCH_ALERT_INTERVAL": "5"}).interval == 5
    with pytest.raises(AlertConfigError, match="AGENTWATCH_ALERT_INTERVAL"):
        load(None, env={"AGENTWATCH_ALERT_INTERVAL": "often"})


class Scripted(Reader):
    """Answers ``overview`` from a script: a number, or an exception (the store is down)."""

    def __init__(self) -> None:
        self.project = "p"
        self.value: float | Exception = 0.0
        self.tasks = 100

    def get(self, endpoint: str, window: Window, **params):
        assert endpoint == "overview"
        if isinstance(self.value, Exception):
            raise self.value
        return {"tasks": self.tasks, "error_rate": self.value, "llm_calls": 0, "tool_calls": 0, "spans": 0}


def test_lifecycle_pending_for_min_samples_and_an_outage_changes_nothing(tmp_path):
    cfg = _load(tmp_path, "rules:\n  - {name: errors, metric: error_rate, threshold: 0.2, for: 60s, min_samples: 10,"
                          " channels: [log]}\n")  # fmt: skip
    reader = Scripted()
    state = MemoryState()
    eng = Engine(cfg, state, reader=lambda p: reader, projects=lambda: ["p"])

    def status():
        return {a.rule: a.status.value for a in eng.alerts.values()}

    reader.value = 0.5
    eng.evaluate(1000)
    assert status() == {"errors": "pending"}
    eng.evaluate(1030)
    assert status() == {"errors": "pending"}  # `for` not yet over
    eng.evaluate(1061)
    assert status() == {"errors": "firing"}
    reader.value = RuntimeError("store down")
    eng.evaluate(1090)
    assert status() == {"errors": "firing"}  # an outage neither resolves nor fires
    assert eng.last_runs[("p", "errors")].error == "store down"
    reader.value, reader.tasks = 0.5, 3  # below min_samples: the figure does not count
    eng.evaluate(1120)
    assert status() == {}  # resolved, and with no channel to tell, done
    assert [e["event"] for e in state.events] == ["pending", "firing", "resolved"]


def test_builtin_rules_run_on_the_log_channel_when_asked():
    from agentwatch.alerts.config import load

    assert load(None, env={}).rules == ()
    cfg = load(None, env={"AGENTWATCH_ALERT_LOG": "true"})
    assert {r.name for r in cfg.rules} == {"agent-loop", "cost-anomaly", "llm-p99-latency", "drift"}
    assert all(r.channels == ("log",) for r in cfg.rules)
    with_slack = load(None, env={"AGENTWATCH_ALERT_LOG": "1", "AGENTWATCH_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/x"})
    assert all(set(r.channels) == {"log", "slack"} for r in with_slack.rules)


def test_a_rule_with_every_is_evaluated_at_most_that_often_and_keeps_its_state_between(tmp_path):
    cfg = _load(tmp_path, "rules:\n  - {name: errors, metric: error_rate, threshold: 0.2, every: 5m, channels: [log]}\n"
                          "  - {name: each, metric: error_rate, threshold: 0.9, channels: [log]}\n")  # fmt: skip
    assert cfg.rules[0].every == 300 and cfg.rules[0].describe()["every"] == "5m"
    reader = Scripted()
    calls: list[str] = []
    eng = Engine(cfg, MemoryState(), reader=lambda p: reader, projects=lambda: ["p"])
    real_get = reader.get
    reader.get = lambda endpoint, window, **kw: calls.append(endpoint) or real_get(endpoint, window, **kw)
    reader.value = 0.5
    for t in (1000, 1030, 1060, 1299):
        eng.evaluate(t)
    assert len(calls) == 4 + 1  # 'each' every time, 'errors' once in its 5 minutes
    assert {a.rule: a.status.value for a in eng.alerts.values()} == {"errors": "firing"}  # kept while skipped
    reader.value = 0.0
    eng.evaluate(1301)  # 5 minutes on: evaluated again, and it clears
    assert len(calls) == 5 + 2
    assert {a.rule: a.status.value for a in eng.alerts.values()} == {}
    reader.value = 0.5
    eng.evaluate(1400)  # skipped: its last evaluation, 99 s ago, is recent enough
    assert {a.rule: a.status.value for a in eng.alerts.values()} == {}
    reader.value = RuntimeError("store down")
    eng.evaluate(1601)  # due, and it fails
    reader.value = 0.5
    eng.evaluate(1610)  # the last evaluation failed: the next tick tries again, whatever `every` says
    assert {a.rule: a.status.value for a in eng.alerts.values()} == {"errors": "firing"}


def test_built_in_drift_rule_runs_every_five_minutes():
    drift = next(r for r in load(None, env=ENV).rules if r.name == "drift")
    assert drift.every == 300
