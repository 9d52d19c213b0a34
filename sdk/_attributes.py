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

# --- added by the SDK (attributes of the agentwatch span events, and a few more span attributes) ---
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS = "gen_ai.usage.cache_write.input_tokens"  # in-flight rename of cache_creation
GEN_AI_USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"  # deprecated alias of input_tokens
GEN_AI_USAGE_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"  # deprecated alias of output_tokens
GEN_AI_TOOL_DESCRIPTION = "gen_ai.tool.description"
GEN_AI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"
OP_TEXT_COMPLETION = "text_completion"
OP_GENERATE_CONTENT = "generate_content"
OP_EMBEDDINGS = "embeddings"
LLM_OPERATIONS = frozenset({OP_CHAT, OP_TEXT_COMPLETION, OP_GENERATE_CONTENT, OP_EMBEDDINGS})

BUDGET_WHAT = "agentwatch.budget.what"  # usd | tokens | llm_calls | tool_calls | seconds
BUDGET_LIMIT = "agentwatch.budget.limit"  # double
BUDGET_VALUE = "agentwatch.budget.value"  # double: what the task had used when the breach was seen
BUDGET_ACTION = "agentwatch.budget.action"  # raise | warn
LOOP_TOOL = "agentwatch.loop.tool"
LOOP_ARGS_HASH = "agentwatch.loop.args_hash"
LOOP_REPEATS = "agentwatch.loop.repeats"  # int: identical calls in a row, this one included
LOOP_THRESHOLD = "agentwatch.loop.threshold"
LOOP_ACTION = "agentwatch.loop.action"  # raise | warn
CIRCUIT_TOOL = "agentwatch.circuit.tool"
CIRCUIT_STATE = "agentwatch.circuit.state"  # closed | open | half_open (the new state)
CIRCUIT_FAILURES = "agentwatch.circuit.failures"  # consecutive failures so far
CIRCUIT_THRESHOLD = "agentwatch.circuit.threshold"
CIRCUIT_COOLDOWN_S = "agentwatch.circuit.cooldown_s"

# attribute keys whose values are identifiers, names or numbers-as-text: never masked
NEVER_MASKED = frozenset(
    {
        GEN_AI_OPERATION_NAME,
        GEN_AI_PROVIDER_NAME,
        GEN_AI_SYSTEM,
        GEN_AI_REQUEST_MODEL,
        GEN_AI_RESPONSE_MODEL,
        GEN_AI_RESPONSE_ID,
        GEN_AI_RESPONSE_FINISH_REASONS,
        GEN_AI_AGENT_NAME,
        GEN_AI_AGENT_ID,
        GEN_AI_TOOL_NAME,
        GEN_AI_TOOL_CALL_ID,
        GEN_AI_TOOL_TYPE,
        ERROR_TYPE,
        TASK_NAME,
        TASK_OUTCOME,
        TOOL_ARGS_HASH,
        DECISION_NAME,
        LOOP_TOOL,
        LOOP_ARGS_HASH,
        CIRCUIT_TOOL,
        BUDGET_WHAT,
        "server.address",
        "exception.type",
    }
)

# attributes that carry content: exported only when content capture is on
CONTENT_KEYS = frozenset(
    {
        GEN_AI_INPUT_MESSAGES,
        GEN_AI_OUTPUT_MESSAGES,
        GEN_AI_SYSTEM_INSTRUCTIONS,
        GEN_AI_TOOL_CALL_ARGUMENTS,
        GEN_AI_TOOL_CALL_RESULT,
        GEN_AI_TOOL_DEFINITIONS,
    }
)
