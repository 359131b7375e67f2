"""Live Call Control: hanging up or transferring the call on the bot's word.

A bot message whose custom payload is ``{"call_control": "end_call"}`` or ``{"call_control":
"transfer", "destination": "+1…", "content": "…", "transfer_plan": {…}}`` is carried out
through the call's ``monitor.controlUrl``; a ``transfer_plan`` (VAPI's ``transferPlan``: a warm
transfer with a summary, see actions/handoff.py) goes with the destination. The message's own
speech goes with the request (``say`` + ``endCallAfterSpoken``, or the transfer's ``content``),
so VAPI hangs up or transfers after saying it instead of cutting it off (docs/specs/vapi.md,
section 4).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import aiohttp

from omnichannel.masking import mask
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.voice import spoken_text

logger = logging.getLogger(__name__)

END_CALL = "end_call"
TRANSFER = "transfer"
#: Control requests are made while the stream is open: bounded well below VAPI's 20 s model
#: timeout.
CONTROL_TIMEOUT_SECONDS = 3.0


#: Where VAPI's Live Call Control URLs live (``https://<region host>.vapi.ai/<call>/control``).
DEFAULT_CONTROL_HOSTS = ("*.vapi.ai",)


@dataclass(frozen=True)
class ControlUrlPolicy:
    """Which ``monitor.controlUrl`` values we POST to: https on an allowed host only, so a forged
    call cannot make this server call loopback, private ranges or anyone else (blind SSRF).

    ``hosts`` are exact names or ``*.`` suffixes. ``allow_loopback`` (a server whose public URL
    is itself a loopback one: local development) also admits http to 127.0.0.1/localhost, where
    the fake VAPI control server runs.
    """

    hosts: Tuple[str, ...] = DEFAULT_CONTROL_HOSTS
    allow_loopback: bool = False

    def allows(self, url: Optional[str]) -> bool:
        if not url:
            return False
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            return False
        if self.allow_loopback and parts.scheme in ("http", "https") and _is_loopback(host):
            return True
        return parts.scheme == "https" and any(_host_matches(host, rule) for rule in self.hosts)


def control_policy(hosts: Sequence[str], public_base_url: str) -> ControlUrlPolicy:
    """The policy of a server reachable at ``public_base_url`` (see ControlUrlPolicy)."""
    public_host = (urlsplit(public_base_url).hostname or "").lower()
    return ControlUrlPolicy(
        tuple(h.lower() for h in hosts), allow_loopback=_is_loopback(public_host)
    )


def _host_matches(host: str, rule: str) -> bool:
    if rule.startswith("*."):
        return host.endswith(rule[1:]) and len(host) > len(rule) - 1
    return host == rule


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def requested_control(message: BotMessage) -> Optional[Dict[str, Any]]:
    """The message's well-formed ``call_control`` payload, or None (a malformed one is logged)."""
    custom = message.custom or {}
    kind = custom.get("call_control")
    if kind == END_CALL:
        return custom
    if kind == TRANSFER and isinstance(custom.get("destination"), str):
        return custom
    if kind is not None:
        logger.warning("ignoring malformed call_control payload %r", mask(str(custom))[:200])
    return None


def control_payload(control: Dict[str, Any], speech: str) -> Dict[str, Any]:
    """The Live Call Control request for a bot message (its speech said by VAPI first)."""
    if control["call_control"] == END_CALL:
        if speech:
            return {"type": "say", "content": speech, "endCallAfterSpoken": True}
        return {"type": "end-call"}
    extra = spoken_text(str(control.get("content") or ""))[0]
    content = " ".join(part for part in (speech, extra) if part)
    destination: Dict[str, Any] = {"type": "number", "number": control["destination"]}
    if isinstance(control.get("transfer_plan"), dict):
        destination["transferPlan"] = control["transfer_plan"]
    payload: Dict[str, Any] = {"type": "transfer", "destination": destination}
    if content:
        payload["content"] = content
    return payload


def _error_kind(error: BaseException) -> str:
    """An error's class and, for a failed connection, its OS reason: never a URL."""
    reason = getattr(error, "os_error", None)
    return f"{type(error).__name__} ({reason})" if reason else type(error).__name__


async def send_control(call_id: str, control_url: str, payload: Dict[str, Any]) -> bool:
    """POST one Live Call Control request; failures are logged, never raised.

    The control URL carries the call's token, so neither it nor an error quoting it (aiohttp's
    InvalidURL does) is logged. A URL aiohttp cannot even encode raises ValueError.
    """
    try:
        timeout = aiohttp.ClientTimeout(total=CONTROL_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(control_url, json=payload) as reply:
                if reply.status >= 300:
                    logger.error(
                        "call %s: call control %s answered HTTP %s",
                        call_id,
                        payload["type"],
                        reply.status,
                    )
                    return False
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
        logger.error(
            "call %s: call control %s failed: %s", call_id, payload["type"], _error_kind(error)
        )
        return False
    logger.info("call %s: call control %s sent", call_id, payload["type"])
    return True
