"""The LLM fallback: what the assistant says when neither NLU nor the dialogue policies know.

Used for the ``nlu_fallback`` intent (rules) and as RulePolicy's core fallback. It asks any
OpenAI-compatible chat-completions server (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
``LLM_MODEL``) through the ``openai`` SDK. The prompt carries the whole conversation across
every channel, each turn labelled with the channel it happened on, the known slots (and the
order they name, when it is the customer's own), and the current channel's style and hard
limits; the answer is held to those limits again afterwards (:func:`actions.formatting.fit`),
since models do not always listen. Everything sent is redacted first (card numbers, emails, the
business's patterns: :mod:`omnichannel.redaction`). The answer is streamed, so the ``llm.chat``
span knows its time to first token besides its tokens and model.

Each channel has a time budget (voice 4 s, chat 8 s, SMS 12 s) that covers one retry on 429 or
5xx. On timeout, error or no key, the designer's ``utter_llm_fallback_offline`` response (with
its channel variations) is said instead. The exchange is not reverted: it stays in the history
every channel sees.

What a person from the support team wrote during a hand-off is in the prompt too, labelled as
theirs, so the bot, once handed back, does not contradict them. And the fallback gives up when
it has been all the customer got for ``GIVE_UP_AFTER`` messages in a row: it then hands the
conversation to a person (``action_handoff_to_human``), if any desk is there to answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List, Tuple, cast

import openai

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
from openai import AsyncOpenAI
from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, FollowupAction
from rasa_sdk.executor import CollectingDispatcher

from actions.business import verified_customer
from actions.formatting import current_channel
from omnichannel import redaction, tracing
from omnichannel.channels import kind_of_event
from omnichannel.handoff.store import HandoffStore
from omnichannel.orders import VerifiedIdentity, find_order
from omnichannel.redis_client import REDIS_FAILURES
from omnichannel.rendering.styles import DEFAULT_CHANNEL, ChannelStyle, fit, style_for
from omnichannel.settings import load_settings

logger = logging.getLogger(__name__)

OFFLINE_RESPONSE = "utter_llm_fallback_offline"
HANDOFF_ACTION = "action_handoff_to_human"
#: The fallback hands off on the customer's message after this many in a row it answered.
GIVE_UP_AFTER = 2
#: Bot messages that carry no content (fillers said while the LLM works) stay out of the prompt.
FILLER_RESPONSES = frozenset({"utter_one_moment"})
#: The prompt keeps this many most recent turns; older ones add cost, not answers.
MAX_HISTORY_TURNS = 40
#: Below this many seconds left, a retry could not finish: give up at once.
MIN_ATTEMPT_SECONDS = 0.3
RETRY_PAUSE_SECONDS = 0.25
#: A slot value longer than this is shortened in the prompt.
MAX_SLOT_CHARS = 300
#: Slots that are machinery, not facts about the customer.
HIDDEN_SLOTS = frozenset(
    {"requested_slot", "session_started_metadata", "unheard", "interrupted", "offer"}
)

SYSTEM_PROMPT = """\
You are the customer-support assistant of Acme Shop, an online shop. You help with orders, \
tracking, refunds and returns, and you can pass the customer to a person.
One customer, one conversation: they reach us by phone (voice), by text message (sms) and in the \
web chat (chat), and the history below includes every channel; each turn is labelled with the \
channel it happened on. Never ask again for something the history already tells you.
Answer only the customer's latest message. Do not invent order details, prices or policies \
that are not given here; if you do not know, say so and offer to connect them with a person.
Turns labelled "support team" were written by a person from our team; never contradict them.

You are answering on: {channel}.
Style for {channel}: {guidance}
Hard limits for {channel}: {limits}. Do not start your answer with a channel label.

Known about this conversation:
{facts}"""


class LlmUnavailable(Exception):
    """No usable answer from the LLM within the channel's budget; the reason is safe to log."""


def conversation_turns(tracker: Tracker) -> List[Tuple[str, str, str]]:
    """``(role, channel, text)`` for every user and bot message, oldest first.

    A user message's channel is its metadata's (or its input channel's); a bot message's is its
    own metadata's when it names one (a text sent by SMS during a call), else the channel of the
    user message it answered. A message cut off by a barge-in is shown as far as it was heard.
    A reply a person from the team wrote (``metadata.agent``) has the role ``agent`` and starts
    with their name.
    """
    turns: List[Tuple[str, str, str]] = []
    channel = DEFAULT_CHANNEL
    for event in tracker.events:
        kind = event.get("event")
        if kind == "user":
            channel = kind_of_event(event) or channel
            text = event.get("text") or ""
            barge_in = (event.get("metadata") or {}).get("barge_in")
            if isinstance(barge_in, dict) and turns and turns[-1][0] == "assistant":
                heard = str(barge_in.get("heard_text") or "").strip()
                role, bot_channel, _ = turns[-1]
                turns[-1] = (
                    role,
                    bot_channel,
                    f"{heard} [interrupted by the customer here]"
                    if heard
                    else "[interrupted before the customer heard anything]",
                )
            if text and not text.startswith("/"):
                turns.append(("user", channel, text))
        elif kind == "bot":
            metadata = event.get("metadata") or {}
            if metadata.get("utter_action") in FILLER_RESPONSES or not event.get("text"):
                continue
            bot_channel = kind_of_event(event) or channel
            agent = metadata.get("agent")
            if isinstance(agent, dict) and agent.get("name"):
                turns.append(("agent", bot_channel, f"{agent['name']}: {event['text']}"))
            else:
                turns.append(("assistant", bot_channel, event["text"]))
    return turns[-MAX_HISTORY_TURNS:]


def known_facts(tracker: Tracker, customer: VerifiedIdentity) -> str:
    """The slots worth knowing, and the facts of the order they name if ``customer`` owns it
    (the LLM must not be able to tell anyone about someone else's order), one per line."""
    lines = []
    for name, value in sorted(tracker.slots.items()):
        if value is None or name in HIDDEN_SLOTS or value == []:
            continue
        if isinstance(value, dict) and isinstance(value.get("summary"), str):
            value = value["summary"]  # e.g. the last call's report: its summary, not the transcript
        text = str(value)
        if len(text) > MAX_SLOT_CHARS:
            text = text[: MAX_SLOT_CHARS - 1] + "…"
        lines.append(f"- {name}: {text}")
    order = find_order(tracker.get_slot("order_number"), customer)
    if order is not None:
        details = [f"items: {order.description}", f"status: {order.status}"]
        if order.carrier:
            details.append(f"carrier: {order.carrier}")
        if order.tracking_number:
            details.append(f"tracking number: {order.tracking_number}")
        if order.estimated_delivery:
            details.append(f"estimated delivery: {order.estimated_delivery}")
        if order.delivered_on:
            details.append(f"delivered on: {order.delivered_on}")
        details.append("refundable" if order.refundable else "not refundable")
        lines.append(f"- order {order.number}: " + ", ".join(details))
    return "\n".join(lines) if lines else "- nothing yet"


def build_messages(
    tracker: Tracker, style: ChannelStyle, customer: VerifiedIdentity
) -> List[Dict[str, str]]:
    """The chat-completions messages: instructions, then the labelled cross-channel history."""
    system = SYSTEM_PROMPT.format(
        channel=style.channel,
        guidance=style.guidance,
        limits=style.limits_text(),
        facts=known_facts(tracker, customer),
    )
    messages = [{"role": "system", "content": system}]
    for role, channel, text in conversation_turns(tracker):
        if role == "agent":
            messages.append({"role": "assistant", "content": f"[{channel}, support team] {text}"})
        else:
            messages.append({"role": role, "content": f"[{channel}] {text}"})
    # Nothing a customer should not have typed (a card number, an email) leaves for the
    # provider, whatever the event log keeps (omnichannel/redaction.py).
    redactor = redaction.redactor()
    return [{**message, "content": redactor.redact(message["content"])} for message in messages]


def fallback_streak(tracker: Tracker) -> int:
    """How many of the customer's messages in a row before the latest one the LLM fallback
    answered (with the LLM or its offline response). Turns taken back (a voice turn superseded
    by the caller's longer utterance, a backchannel) do not count."""
    streak = 0
    answered_by_fallback = False
    users = 0
    for event in reversed(tracker.applied_events()):
        kind = event.get("event")
        if kind == "bot":
            metadata = event.get("metadata") or {}
            if metadata.get("llm_fallback") or metadata.get("utter_action") == OFFLINE_RESPONSE:
                answered_by_fallback = True
        elif kind == "user":
            users += 1
            if users == 1:
                answered_by_fallback = False
                continue  # the message being answered now
            if not answered_by_fallback:
                break
            streak += 1
            answered_by_fallback = False
    return streak


async def desk_is_there() -> bool:
    """Whether a person could take over (some replica serves the inbox or a helpdesk)."""
    try:
        return bool(await HandoffStore(load_settings().redis_url).desks_alive(time.time()))
    except REDIS_FAILURES as error:
        logger.warning("LLM fallback: hand-off desks unknown (%s)", type(error).__name__)
        return False


def _retryable(error: Exception) -> bool:
    if isinstance(error, openai.APIStatusError):
        return error.status_code == 429 or error.status_code >= 500
    return False


def _describe(error: Exception) -> str:
    """What went wrong, for the log: the error's kind, HTTP status and message (shortened)."""
    status = getattr(error, "status_code", None)
    message = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}" + (f" {status}" if status else "") + f": {message}"


async def _streamed_answer(
    client: AsyncOpenAI,
    model: str,
    messages: List[Dict[str, str]],
    style: ChannelStyle,
    remaining: float,
    span: Any,
) -> str:
    """The answer, streamed so its first token's time is known; tokens and times go on
    ``span`` (``gen_ai.*`` attributes of OpenTelemetry's semantic conventions)."""
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model=model,
        # The SDK types each role's message apart; ours are built by role above.
        messages=cast("List[ChatCompletionMessageParam]", messages),
        max_tokens=style.llm_max_tokens,
        temperature=0.3,
        timeout=remaining,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts: List[str] = []
    async for chunk in stream:
        if chunk.usage is not None:
            span.set(
                **{
                    "gen_ai.usage.input_tokens": chunk.usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": chunk.usage.completion_tokens,
                }
            )
        for choice in chunk.choices or ():
            text = choice.delta.content if choice.delta is not None else None
            if text:
                if not parts:
                    first_ms = (time.perf_counter() - started) * 1000
                    span.set(time_to_first_token_ms=round(first_ms, 1))
                parts.append(text)
        if chunk.model:
            span.set(**{"gen_ai.response.model": chunk.model})
    return "".join(parts)


async def complete(messages: List[Dict[str, str]], style: ChannelStyle) -> str:
    """The LLM's answer within ``style.llm_budget`` seconds (one retry on 429/5xx), or
    LlmUnavailable."""
    settings = load_settings()
    if not settings.openai_api_key:
        raise LlmUnavailable("OPENAI_API_KEY is not set")
    deadline = time.monotonic() + style.llm_budget
    async with AsyncOpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        max_retries=0,
        timeout=style.llm_budget,
    ) as client:
        for attempt in (1, 2):
            remaining = deadline - time.monotonic()
            if remaining < MIN_ATTEMPT_SECONDS:
                raise LlmUnavailable(f"{style.channel} budget of {style.llm_budget:g} s spent")
            try:
                with tracing.span(
                    "llm.chat",
                    {
                        "gen_ai.system": "openai",
                        "gen_ai.operation.name": "chat",
                        "gen_ai.request.model": settings.llm_model,
                        "attempt": attempt,
                    },
                    kind=tracing.CLIENT,
                ) as span:
                    content = await asyncio.wait_for(
                        _streamed_answer(
                            client, settings.llm_model, messages, style, remaining, span
                        ),
                        timeout=remaining,
                    )
            except (asyncio.TimeoutError, openai.APITimeoutError) as error:
                raise LlmUnavailable(
                    f"no answer within the {style.channel} budget of {style.llm_budget:g} s"
                ) from error
            except openai.OpenAIError as error:
                if attempt == 1 and _retryable(error):
                    logger.warning("LLM failed (%s); retrying once", _describe(error))
                    await asyncio.sleep(
                        min(RETRY_PAUSE_SECONDS, max(0.0, deadline - time.monotonic() - 1))
                    )
                    continue
                raise LlmUnavailable(f"LLM error: {_describe(error)}") from error
            content = content.strip()
            if not content:
                raise LlmUnavailable("LLM gave an empty answer")
            return content
    raise LlmUnavailable("LLM failed twice")


async def answer_with_llm(dispatcher: CollectingDispatcher, tracker: Tracker) -> None:
    """Utter the LLM's answer to the latest message in the current channel's form, or the
    designer's offline response."""
    style = style_for(current_channel(tracker))
    messages = build_messages(tracker, style, await verified_customer(tracker))
    started = time.monotonic()
    try:
        answer = fit(await complete(messages, style), style.channel)
    except LlmUnavailable as error:
        # The customer gets the offline response; the operator must see why, every time.
        logger.error(
            "LLM fallback unavailable on %s after %.1f s: %s",
            style.channel,
            time.monotonic() - started,
            error,
        )
        answer = ""
    if answer:
        dispatcher.utter_message(text=answer, llm_fallback=True)
    else:
        dispatcher.utter_message(response=OFFLINE_RESPONSE)


class ActionLlmFallback(Action):
    """Answers what the assistant was not built for, in the current channel's form."""

    def name(self) -> str:
        return "action_llm_fallback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        if fallback_streak(tracker) >= GIVE_UP_AFTER and await desk_is_there():
            logger.info("LLM fallback gives up on %s: handing off", tracker.sender_id)
            return [FollowupAction(HANDOFF_ACTION)]
        await answer_with_llm(dispatcher, tracker)
        # As the core fallback no rule follows it: without this, an unsure policy would pick
        # the fallback again and again in one turn. Inside a form, the form asks again for what
        # it still needs: left rejected, it would send every later answer (even the order
        # number it asked for) back here.
        return [FollowupAction(tracker.active_loop_name or "action_listen")]
