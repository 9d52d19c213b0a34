"""One span, many dialects: OTel GenAI (current and deprecated names), OpenInference and OpenLLMetry.

The alias tables below are the single truth for how a raw attribute map becomes agentwatch's typed
fields (kind, provider, model, tokens by type, tool, agent, ids, outcome). From them we generate

- the ClickHouse expressions of the spans table's MATERIALIZED columns, so every writer — our
  collector, or a stock OpenTelemetry Collector pointed at our schema — gets the same typed fields
  computed by the engine, not by Python per span;
- a small Python mirror (``llm_usage``) of the few fields pricing needs at ingest.

A test checks the two agree on a corpus of spans.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentwatch import _attributes as A

# --- alias tables: first non-empty wins ---
OPERATION = (A.GEN_AI_OPERATION_NAME,)
OPENINFERENCE_KIND = "openinference.span.kind"
TRACELOOP_KIND = "traceloop.span.kind"
LLM_REQUEST_TYPE = "llm.request.type"  # older OpenLLMetry

PROVIDER = (A.GEN_AI_PROVIDER_NAME, A.GEN_AI_SYSTEM, "llm.provider", "llm.system")
# legacy / OpenInference provider values -> gen_ai.provider.name values (STANDARDS.md 1.6, 2.3)
PROVIDER_VALUES = {
    "az.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "azure": "azure.ai.openai",
    "aws": "aws.bedrock",
    "amazon": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "google": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "mistralai": "mistral_ai",
    "xai": "x_ai",
    "ibm.watsonx.ai": "ibm.watsonx.ai",
    "Anthropic": "anthropic",
    "OpenAI": "openai",
}
RESPONSE_MODEL = (A.GEN_AI_RESPONSE_MODEL, "llm.response.model_name", "llm.model_name", "embedding.model_name")
REQUEST_MODEL = (A.GEN_AI_REQUEST_MODEL, "llm.request.model_name", "llm.model_name", "embedding.model_name")

INPUT_TOKENS = (A.GEN_AI_USAGE_INPUT_TOKENS, "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKENS = (A.GEN_AI_USAGE_OUTPUT_TOKENS, "gen_ai.usage.completion_tokens", "llm.token_count.completion")
CACHE_READ_TOKENS = (
    A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
CACHE_WRITE_TOKENS = (
    A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
REASONING_TOKENS = (
    A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
)
COST = (A.COST_USD, "llm.cost.total", "gen_ai.usage.cost")

TOOL_NAME = (A.GEN_AI_TOOL_NAME, "tool.name")
TOOL_ARGS = (A.GEN_AI_TOOL_CALL_ARGUMENTS, "traceloop.entity.input")
AGENT_NAME = (A.GEN_AI_AGENT_NAME, "agent.name", "traceloop.workflow.name", A.TASK_NAME)
CONVERSATION_ID = (A.GEN_AI_CONVERSATION_ID, A.SESSION_ID, "traceloop.association.properties.session_id")
SESSION_ID = (A.SESSION_ID, "traceloop.association.properties.session_id", A.GEN_AI_CONVERSATION_ID)
USER_ID = (A.USER_ID, "traceloop.association.properties.user_id", "enduser.id")

TASK_OPS = ("invoke_agent", "create_agent", "invoke_workflow")
LLM_OPS = (
    "chat", "text_completion", "generate_content", "embeddings", "completion", "embedding", "rerank", "responses",
)  # fmt: skip
TOOL_OPS = ("execute_tool",)
DECISION_OPS = (A.OP_DECISION, "plan")
KINDS = ("task", "llm", "tool", "decision", "other")

MAX_TOKENS = 10**12  # anything above is garbage, not usage


# --- SQL generation -------------------------------------------------------------------------------
def _lit(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _attr(key: str) -> str:
    return f"SpanAttributes[{_lit(key)}]"


def _first(keys: tuple[str, ...]) -> str:
    parts = ", ".join(f"nullIf({_attr(k)}, '')" for k in keys)
    return f"coalesce({parts}, '')"


def _in(expr: str, values: tuple[str, ...]) -> str:
    return f"{expr} IN ({', '.join(_lit(v) for v in values)})"


def _count(keys: tuple[str, ...]) -> str:
    f = f"toFloat64OrZero({_first(keys)})"
    return f"toUInt64(if(isFinite({f}) AND {f} > 0 AND {f} < {MAX_TOKENS}, {f}, 0))"


def _kind_sql() -> str:
    op, oi, tl, lrt = (
        _attr(A.GEN_AI_OPERATION_NAME),
        _attr(OPENINFERENCE_KIND),
        _attr(TRACELOOP_KIND),
        _attr(LLM_REQUEST_TYPE),
    )
    return (
        "multiIf("
        f"{_in(op, TASK_OPS)} OR {_in(oi, ('AGENT',))} OR {_in(tl, ('workflow', 'agent'))}, 'task', "
        f"{_in(op, LLM_OPS)} OR {_in(oi, ('LLM', 'EMBEDDING', 'RERANKER'))} OR {_in(lrt, LLM_OPS)}, 'llm', "
        f"{_in(op, TOOL_OPS)} OR {_in(oi, ('TOOL',))} OR {_in(tl, ('tool',))}, 'tool', "
        f"{_in(op, DECISION_OPS)} OR mapContains(SpanAttributes, {_lit(A.DECISION_NAME)}), 'decision', "
        "ParentSpanId = '', 'task', "
        "'other')"
    )


def _provider_sql() -> str:
    raw = _first(PROVIDER)
    src = ", ".join(_lit(k) for k in PROVIDER_VALUES)
    dst = ", ".join(_lit(v) for v in PROVIDER_VALUES.values())
    return f"transform({raw}, [{src}], [{dst}], {raw})"


def _tool_name_sql() -> str:
    named = _first(TOOL_NAME)
    return (
        f"multiIf({named} != '', {named}, "
        f"{_attr(TRACELOOP_KIND)} = 'tool', {_attr('traceloop.entity.name')}, "
        "Kind = 'tool', replaceRegexpOne(SpanName, '^execute_tool ', ''), '')"
    )


def _args_hash_sql() -> str:
    explicit = _attr(A.TOOL_ARGS_HASH)
    args = f"multiIf({_first(TOOL_ARGS)} != '', {_first(TOOL_ARGS)}, Kind = 'tool', {_attr('input.value')}, '')"
    return f"multiIf({explicit} != '', {explicit}, {args} != '', lower(hex(cityHash64({args}))), '')"


def _agent_name_sql() -> str:
    tl_entity = f"if({_in(_attr(TRACELOOP_KIND), ('agent', 'workflow'))}, {_attr('traceloop.entity.name')}, '')"
    return f"coalesce(nullIf({_first(AGENT_NAME)}, ''), nullIf({tl_entity}, ''), '')"


_IS_ERROR = "(StatusCode IN ('Error', 'STATUS_CODE_ERROR'))"


def _error_type_sql() -> str:
    exc = "arrayFirst(x -> x != '', arrayMap(m -> m['exception.type'], Events.Attributes))"
    return (
        f"multiIf({_attr(A.ERROR_TYPE)} != '', {_attr(A.ERROR_TYPE)}, "
        f"{_IS_ERROR} AND {exc} != '', {exc}, {_IS_ERROR}, '_OTHER', '')"
    )


def _outcome_sql() -> str:
    explicit = _attr(A.TASK_OUTCOME)
    return f"multiIf({_in(explicit, A.OUTCOMES)}, {explicit}, ErrorType != '', 'error', 'ok')"


def _input_tokens_sql() -> str:
    # semconv: input includes cache reads and writes; a sender whose input excludes them (cache > input)
    # is corrected by adding them, the same rule as `llm_usage`.
    return (
        "if(RawInputTokens < CacheReadTokens + CacheWriteTokens, "
        "RawInputTokens + CacheReadTokens + CacheWriteTokens, RawInputTokens)"
    )


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    expr: str


def typed_columns() -> list[Column]:
    """MATERIALIZED columns of the spans table, in dependency order."""
    ttft = f"toFloat64OrZero({_attr(A.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)})"
    return [
        Column("Kind", "LowCardinality(String)", _kind_sql()),
        Column("Operation", "LowCardinality(String)", _first(OPERATION)),
        Column("Provider", "LowCardinality(String)", _provider_sql()),
        Column("RequestModel", "LowCardinality(String)", _first(REQUEST_MODEL)),
        Column("Model", "LowCardinality(String)", f"coalesce(nullIf({_first(RESPONSE_MODEL)}, ''), RequestModel)"),
        Column("RawInputTokens", "UInt64", _count(INPUT_TOKENS)),
        Column("CacheReadTokens", "UInt64", _count(CACHE_READ_TOKENS)),
        Column("CacheWriteTokens", "UInt64", _count(CACHE_WRITE_TOKENS)),
        Column("InputTokens", "UInt64", _input_tokens_sql()),
        Column("OutputTokens", "UInt64", _count(OUTPUT_TOKENS)),
        Column("ReasoningTokens", "UInt64", _count(REASONING_TOKENS)),
        Column("ResponseId", "String", _attr(A.GEN_AI_RESPONSE_ID)),
        Column("CallKey", "String", "if(ResponseId != '', ResponseId, SpanId)"),
        Column("TtftMs", "Float64", f"if(isFinite({ttft}) AND {ttft} > 0, {ttft} * 1000, 0)"),
        Column("ToolName", "LowCardinality(String)", _tool_name_sql()),
        Column("ToolArgsHash", "String", _args_hash_sql()),
        Column("AgentName", "LowCardinality(String)", _agent_name_sql()),
        Column("TaskName", "LowCardinality(String)", f"coalesce(nullIf({_attr(A.TASK_NAME)}, ''), AgentName)"),
        Column("ConversationId", "String", _first(CONVERSATION_ID)),
        Column("SessionId", "String", _first(SESSION_ID)),
        Column("UserId", "String", _first(USER_ID)),
        Column("ErrorType", "LowCardinality(String)", _error_type_sql()),
        Column("Outcome", "LowCardinality(String)", _outcome_sql()),
        Column("DecisionName", "String", _attr(A.DECISION_NAME)),
        Column("EndTime", "DateTime64(9)", "Timestamp + toIntervalNanosecond(Duration)"),
    ]


# --- the Python mirror, for pricing at ingest ---------------------------------------------------
def _first_py(attrs: dict[str, str], keys: tuple[str, ...]) -> str:
    for k in keys:
        v = attrs.get(k)
        if v:
            return v
    return ""


def _count_py(attrs: dict[str, str], keys: tuple[str, ...]) -> int:
    v = _first_py(attrs, keys)
    if not v:
        return 0
    try:
        f = float(v)
    except ValueError:
        return 0
    return int(f) if 0 < f < MAX_TOKENS else 0  # NaN fails both comparisons


@dataclass(frozen=True, slots=True)
class LlmUsage:
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int


def provider_of(attrs: dict[str, str]) -> str:
    raw = _first_py(attrs, PROVIDER)
    return PROVIDER_VALUES.get(raw, raw)


def _is_aggregate(attrs: dict[str, str]) -> bool:
    """Agent and workflow spans may carry the run's total usage (semconv): priced via their LLM spans."""
    return (
        attrs.get(A.GEN_AI_OPERATION_NAME) in TASK_OPS
        or attrs.get(OPENINFERENCE_KIND) in ("AGENT", "CHAIN")
        or attrs.get(TRACELOOP_KIND) in ("workflow", "agent", "task")
    )


def llm_usage(attrs: dict[str, str]) -> LlmUsage | None:
    """The usage to price, or None when the span reports no tokens (tools, most spans) or is an aggregate."""
    inp = _count_py(attrs, INPUT_TOKENS)
    out = _count_py(attrs, OUTPUT_TOKENS)
    if (not inp and not out) or _is_aggregate(attrs):
        return None
    cr = _count_py(attrs, CACHE_READ_TOKENS)
    cw = _count_py(attrs, CACHE_WRITE_TOKENS)
    if inp < cr + cw:
        inp += cr + cw
    model = _first_py(attrs, RESPONSE_MODEL) or _first_py(attrs, REQUEST_MODEL)
    return LlmUsage(provider_of(attrs), model, inp, out, cr, cw, _count_py(attrs, REASONING_TOKENS))


def sent_cost(attrs: dict[str, str]) -> float | None:
    """A cost the sender already computed (kept as is, DESIGN.md)."""
    v = _first_py(attrs, COST)
    if not v:
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    return f if 0 <= f < 1e9 else None
