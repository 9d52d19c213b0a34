"""agentwatch alerts: rules as code over the analytics, paging Slack, PagerDuty and webhooks.

One page per incident, a resolve when it clears, state that survives a restart (STYLE.md 13: the
Alertmanager model). ``AlertService`` is the collector daemon; ``load`` reads a rules file.
"""

from agentwatch.alerts.config import AlertConfig, AlertConfigError, load
from agentwatch.alerts.service import AlertService

__all__ = ["AlertConfig", "AlertConfigError", "AlertService", "load"]
