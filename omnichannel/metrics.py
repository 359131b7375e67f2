"""The Prometheus metrics of a Rasa server process: the one place that names and defines them.

Every part increments the objects defined here, so a metric's name, help text and labels are
decided once. Label values are bounded sets (channel kinds, fixed outcomes, Redis command
names), so a replica's series stay few however many conversations it serves.

Each process exposes its own figures on ``METRICS_PORT`` (:func:`serve`, started by the ops
channel), bound to ``METRICS_ADDRESS`` (loopback unless set); fleet-wide figures are
Prometheus's sums over the replicas it scrapes.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from typing import Any, Mapping, Optional

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from omnichannel.errors import ConfigError

logger = logging.getLogger(__name__)

#: The channel label of a turn that came in on no channel of ours (Rasa's REST channel, a shell).
OTHER_CHANNEL = "other"

#: Turn outcomes (the ``outcome`` label of :data:`TURNS`).
TURN_OK = "ok"
TURN_BUSY = "busy"
TURN_STATE_UNAVAILABLE = "state_unavailable"
TURN_ACTION_FAILED = "action_failed"
#: Stopped by its channel (a voice turn superseded by the caller's next words, a shutdown).
TURN_CANCELLED = "cancelled"
TURN_ERROR = "error"

TURNS = Counter(
    "omnichannel_turns",
    "User turns run through Rasa, by channel kind and outcome.",
    ["channel", "outcome"],
)
TURN_SECONDS = Histogram(
    "omnichannel_turn_seconds",
    "Time from handing a user message to Rasa until its turn ended (lock wait included).",
    ["channel"],
    # Voice answers must start within about a second; SMS answers inline within 5 s.
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0),
)
REDIS_RETRIES = Counter(
    "omnichannel_redis_retries",
    "Redis commands retried after a transient failure (failover, resharding, lost connection).",
    ["command"],
)
REDIS_COMMAND_FAILURES = Counter(
    "omnichannel_redis_command_failures",
    "Redis commands that failed for a transient reason and were not retried further.",
    ["command"],
)
DEPENDENCY_UP = Gauge(
    "omnichannel_dependency_up",
    "1 when this process's last readiness round reached the dependency (redis, "
    "action_server), else 0; an action server outage shows here, not in readiness.",
    ["dependency"],
)
OPEN_CHAT_SOCKETS = Gauge("omnichannel_chat_open_sockets", "Web chat sockets open on this process.")
DEDUPE_HITS = Counter(
    "omnichannel_dedupe_hits",
    "Deliveries recognised as duplicates and not run as new turns, by channel kind.",
    ["channel"],
)

VOICE_TURN_PART_SECONDS = Histogram(
    "omnichannel_voice_turn_part_seconds",
    "A voice turn's parts, server side: until its first words left (first_speech), in Rasa "
    "(lock + processor: rasa) and added around Rasa by the connector (connector).",
    ["part"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0),
)
LOCK_WAIT_SECONDS = Histogram(
    "omnichannel_lock_wait_seconds",
    "Time a turn waited for its conversation's lock (turns queued behind others).",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)
IN_FLIGHT_WORK = Gauge(
    "omnichannel_in_flight_work",
    "Durable in-flight items not done yet, fleet-wide (omnichannel/leases.py), by kind "
    "(sms_outbox is the SMS outbox's depth); every replica reports the same figure: use max().",
    ["kind"],
)
TAKEOVERS = Counter(
    "omnichannel_takeovers",
    "In-flight items this process took over from a replica that stopped renewing their lease.",
    ["kind"],
)

#: Outcomes of one SMS part sent through Twilio's Messages API (omnichannel/sms_sender.py).
SMS_SENT = "sent"
SMS_FAILED = "failed"
SMS_OPTED_OUT = "opted_out"
#: A send whose outcome was unknown (timeout, dropped connection, 5xx), found in Twilio's
#: records (so not sent again) or not found there (so sent again).
SMS_RECONCILED_SENT = "reconciled_sent"
SMS_RECONCILED_MISSING = "reconciled_missing"
SMS_SENDS = Counter(
    "omnichannel_sms_sends",
    "SMS parts this process asked Twilio to send, by outcome (sent, failed, opted_out, and for "
    "an unknown outcome checked against Twilio's records: reconciled_sent, reconciled_missing).",
    ["outcome"],
)

#: What happened to a hand-off (the ``event`` label of :data:`HANDOFFS`): the transitions of
#: omnichannel/handoff/state.py, plus ``taken_over`` (an agent took another's claim).
HANDOFF_EVENTS = (
    "requested",
    "claimed",
    "taken_over",
    "handed_back",
    "resolved",
    "abandoned",
    "transferred",
)
HANDOFFS = Counter(
    "omnichannel_handoffs",
    "Hand-offs to a person, by the channel kind the customer asked on and what happened: "
    "requested, claimed, taken_over, handed_back, resolved, abandoned, transferred (a call put "
    "through to the support line).",
    ["channel", "event"],
)
HANDOFF_CLAIM_SECONDS = Histogram(
    "omnichannel_handoff_claim_seconds",
    "Time from a hand-off's request until an agent claimed it, by channel kind.",
    ["channel"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400),
)
HANDOFFS_OPEN = Gauge(
    "omnichannel_handoffs_open",
    "Open hand-offs fleet-wide, by state (queued: waiting for an agent; claimed: an agent holds "
    "it); every replica reports the same figure: use max().",
    ["state"],
)

#: How a message to a customer on a messaging channel went out (omnichannel/sms_sender.py's
#: send_to_customer): by SMS as asked, in WhatsApp's window, as an approved WhatsApp template,
#: by SMS because WhatsApp could not take it, or held until the customer writes on WhatsApp.
ROUTE_SMS = "sms"
ROUTE_SESSION = "session"
ROUTE_TEMPLATE = "template"
ROUTE_SMS_FALLBACK = "sms_fallback"
ROUTE_HELD = "held"
OUTBOUND_ROUTES = Counter(
    "omnichannel_outbound_messages",
    "Messages to customers on a messaging channel, by the channel they were meant for "
    "(sms, whatsapp) and the route they took (sms, session, template, sms_fallback, held).",
    ["channel", "route"],
)
#: Twilio error codes named in the failures metric; any other is counted as "other", so the
#: label keeps a bounded set of values.
KNOWN_MESSAGE_ERRORS = frozenset(
    {
        "21610",  # unsubscribed recipient (STOP)
        "21614",  # not a mobile number
        "30003",  # unreachable handset
        "30005",  # unknown destination
        "30006",  # landline or unreachable carrier
        "30007",  # carrier filtering
        "63003",  # WhatsApp: bad or inactive address
        "63014",  # WhatsApp: blocked by the user
        "63016",  # WhatsApp: outside the 24-hour window
        "63018",  # WhatsApp: rate or tier limit
        "63021",  # WhatsApp: template too long after substitution
        "63024",  # WhatsApp: invalid recipient (not on WhatsApp)
    }
)
MESSAGE_STATUSES = Counter(
    "omnichannel_message_statuses",
    "Status callbacks Twilio reported for our messages, by channel (sms, whatsapp) and status "
    "(sent, delivered, read, failed, undelivered, …).",
    ["channel", "status"],
)
MESSAGE_FAILURES = Counter(
    "omnichannel_message_failures",
    "Messages Twilio reported failed or undelivered, by channel and error code (the codes in "
    "KNOWN_MESSAGE_ERRORS, else 'other').",
    ["channel", "error"],
)


def error_label(code: Optional[str]) -> str:
    """A Twilio error code as a bounded label value."""
    if not code:
        return "none"
    return code if code in KNOWN_MESSAGE_ERRORS else "other"


#: The exporter's address unless METRICS_ADDRESS says otherwise: only this host can scrape.
CALLBACKS = Counter(
    "omnichannel_callbacks",
    "Callbacks by phone, by outcome: scheduled, moved, cancelled (by the customer or an agent); "
    "placed (VAPI took the call), retried (VAPI refused for now), reconciled (a dial found the "
    "call an earlier attempt made); answered; completed, not_answered, failed, refused.",
    ["outcome"],
)

DEFAULT_METRICS_ADDRESS = "127.0.0.1"

#: Outcomes of a call to Chatwoot's Application API (the ``outcome`` label of
#: :data:`CHATWOOT_REQUESTS`): done, refused (a 4xx other than 429), failed (network, timeout,
#: 429, 5xx: the sync is retried with backoff).
CHATWOOT_OK = "ok"
CHATWOOT_REFUSED = "refused"
CHATWOOT_FAILED = "failed"
CHATWOOT_REQUESTS = Counter(
    "omnichannel_chatwoot_requests",
    "Calls to Chatwoot's Application API, by operation (create_contact, create_conversation, "
    "create_message, …) and outcome (ok, refused, failed).",
    ["operation", "outcome"],
)
CHATWOOT_WEBHOOKS = Counter(
    "omnichannel_chatwoot_webhooks",
    "Chatwoot webhook deliveries, by outcome: acted (an agent's reply, note, claim, hand-back), "
    "ignored (our own echo, other events), refused (failed verification), replayed, unknown "
    "(a conversation never handed off), bad_request, failed (retry later).",
    ["outcome"],
)
DESK_SYNCS = Counter(
    "omnichannel_desk_syncs",
    "Helpdesk syncs of one conversation, by desk and outcome (ok; failed: retried with backoff "
    "through the desk_sync work items, given up after many with an error in the log).",
    ["desk", "outcome"],
)

_served_on: Optional[int] = None
_serve_lock = threading.Lock()


def turn_ended(channel: Optional[str], outcome: str, seconds: float) -> None:
    """Count one turn of ``channel`` (a channel kind; None: :data:`OTHER_CHANNEL`)."""
    label = channel or OTHER_CHANNEL
    TURNS.labels(channel=label, outcome=outcome).inc()
    TURN_SECONDS.labels(channel=label).observe(seconds)


def handoff_event(channel: Optional[str], event: str) -> None:
    """Count one hand-off ``event`` (one of HANDOFF_EVENTS) on ``channel`` (a channel kind)."""
    HANDOFFS.labels(channel=channel or OTHER_CHANNEL, event=event).inc()


def command_name(args: Any) -> str:
    """The Redis command of an ``execute_command`` call, as a label value."""
    if not args:
        return "unknown"
    name = args[0]
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return str(name).split(" ", 1)[0].upper()


def metrics_port(env: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """``METRICS_PORT`` from ``env`` (default: the process's environment); None when unset."""
    value = ((os.environ if env is None else env).get("METRICS_PORT") or "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"METRICS_PORT must be a TCP port (1-65535), got {value!r}")
    return int(value)


def metrics_address(env: Optional[Mapping[str, str]] = None) -> str:
    """``METRICS_ADDRESS``, the IP address the exporter binds: loopback unless set (the
    deployment files set ``0.0.0.0`` for the scraper on the pod or container network)."""
    value = ((os.environ if env is None else env).get("METRICS_ADDRESS") or "").strip()
    if not value:
        return DEFAULT_METRICS_ADDRESS
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(f"METRICS_ADDRESS must be an IP address, got {value!r}") from None


def serve(port: int, address: str = DEFAULT_METRICS_ADDRESS) -> bool:
    """Serve ``/metrics`` on ``address``:``port``, once per process; True if serving.

    A port already taken (a second server process on the same host with the same environment)
    is logged as an error and leaves this process without an exporter: its chats still work,
    and Prometheus shows the target as down.
    """
    global _served_on
    with _serve_lock:
        if _served_on is not None:
            if _served_on != port:
                logger.warning("metrics already served on port %d, not %d", _served_on, port)
            return True
        try:
            start_http_server(port, addr=address)
        except OSError as error:
            logger.error("metrics: cannot serve on %s port %d: %s", address, port, error)
            return False
        _served_on = port
        logger.info("metrics: serving /metrics on %s port %d", address, port)
        return True


def chatwoot_request(operation: str, outcome: str) -> None:
    """Count one call to Chatwoot's API (``operation``: named in connectors/chatwoot/api.py)."""
    CHATWOOT_REQUESTS.labels(operation=operation, outcome=outcome).inc()
#: Outcomes of business-initiated items (omnichannel/outbound/): the ``outcome`` label of
#: :data:`OUTBOUND_ITEMS`; ``channel`` is a channel kind, or ``none`` before one was chosen.
OUTBOUND_SCHEDULED = "scheduled"
OUTBOUND_HELD = "held"
OUTBOUND_QUEUED = "queued"
OUTBOUND_SENT = "sent"
OUTBOUND_REFUSED = "refused"
OUTBOUND_FAILED = "failed"
OUTBOUND_CANCELLED = "cancelled"
OUTBOUND_ITEMS = Counter(
    "omnichannel_outbound_items",
    "Business-initiated items (notifications, callbacks) by kind, channel kind and outcome "
    "(scheduled, held, queued, sent, refused, failed, cancelled).",
    ["kind", "channel", "outcome"],
)
OUTBOUND_REFUSALS = Counter(
    "omnichannel_outbound_refusals",
    "Business-initiated items refused or held, by kind and reason (opted_out, no_consent, "
    "quiet_hours, customer_rate_limit, global_rate_limit, unknown_customer, ...).",
    ["kind", "reason"],
)
