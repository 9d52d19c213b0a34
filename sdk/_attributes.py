"""Attribute keys agentwatch writes and reads: OpenTelemetry GenAI semantic conventions (v1.41.0) first,
an ``agentwatch.*`` namespace only for what the conventions lack (tasks' outcome, decisions, budgets, loops).

The SDK writes these names and the collector reads them: this module is the one place both agree on.
"""

from __future__ import annotations

# --- GenAI semantic conventions (v1.41.0) ---
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_SYSTEM = "gen_ai.system"  # deprecated alias of gen_ai.provider.name
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
ERROR_TYPE = "error.type"
SESSION_ID = "session.id"
USER_ID = "user.id"

# gen_ai.operation.name values
OP_CHAT = "chat"
OP_INVOKE_AGENT = "invoke_agent"
OP_EXECUTE_TOOL = "execute_tool"
OP_DECISION = "decision"  # ours: no convention has a decision span (the draft `plan` is the nearest)

# --- agentwatch's own (what the conventions have no word for) ---
TASK_NAME = "agentwatch.task.name"
TASK_OUTCOME = "agentwatch.task.outcome"  # ok | error | escalated | budget_exceeded | loop_stopped | timeout
TOOL_ARGS_HASH = "agentwatch.tool.args_hash"  # hex digest of the normalised arguments, set even without content
DECISION_NAME = "agentwatch.decision.name"
DECISION_CHOICE = "agentwatch.decision.choice"
DECISION_OPTIONS = "agentwatch.decision.options"  # string[]
DECISION_CONFIDENCE = "agentwatch.decision.confidence"  # double in [0, 1]
DECISION_REASONING = "agentwatch.decision.reasoning"
ESCALATION_REASON = "agentwatch.escalation.reason"
ESCALATION_SUMMARY = "agentwatch.escalation.summary"
ESCALATION_ACTIONS = "agentwatch.escalation.actions_taken"
COST_USD = "agentwatch.cost.usd"  # a cost the sender already knows; the collector keeps it

# span events
EVENT_BUDGET_EXCEEDED = "agentwatch.budget.exceeded"
EVENT_LOOP_DETECTED = "agentwatch.loop.detected"
EVENT_CIRCUIT_OPEN = "agentwatch.circuit.open"
EVENT_CIRCUIT_HALF_OPEN = "agentwatch.circuit.half_open"
EVENT_CIRCUIT_CLOSED = "agentwatch.circuit.closed"

OUTCOMES = ("ok", "error", "escalated", "budget_exceeded", "loop_stopped", "timeout")
