"""Who is calling: the caller's address, and the conversation it belongs to.

A phone caller is their number (``tel:``); a signed-in web caller is the user a web chat JWT in
the call's variables names (``user:``), checked as the web chat checks it (signature, expiry, a
maximum lifetime, the audience when one is configured:
:class:`~omnichannel.customer_tokens.HostTokenPolicy`); anyone else is the call itself
(``anon:``), so an anonymous caller still has one conversation for the whole call.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import Optional, Tuple

from connectors.vapi.wire import Call, Customer
from omnichannel.addresses import Address, InvalidAddress, anon_address, phone_address, user_address
from omnichannel.channels import VOICE
from omnichannel.customer_tokens import HostTokenPolicy, TokenRefused
from omnichannel.identity import IdentityStore

logger = logging.getLogger(__name__)

#: Calls whose conversation id this process remembers (one identity lookup per call).
CALLS_REMEMBERED = 10000


class Callers:
    """Caller addresses and their conversations, resolved once per call and process."""

    def __init__(
        self,
        identity: IdentityStore,
        default_phone_region: str,
        user_tokens: Optional[HostTokenPolicy],
        trust_user_id_variable: bool,
    ) -> None:
        self.identity = identity
        self.default_phone_region = default_phone_region
        #: None without WEBCHAT_JWT_SECRET: no web caller can sign in.
        self.user_tokens = user_tokens
        #: Off: a browser starting a web call sets variableValues itself, so only a signed
        #: ``user_token`` names a user.
        self.trust_user_id_variable = trust_user_id_variable
        self._conversations: OrderedDict[Tuple[str, str], str] = OrderedDict()

    def address(self, call: Call, customer: Optional[Customer]) -> Address:
        """tel: for a phone caller; user: for a signed-in web caller; else the call itself."""
        number = (call.customer.number if call.customer else None) or (
            customer.number if customer else None
        )
        if number:
            try:
                return phone_address(number, self.default_phone_region)
            except InvalidAddress as error:
                logger.info("call %s: caller number not usable (%s)", call.call_id, error)
        variables = call.variables
        token = variables.get("user_token") or variables.get("userToken")
        if token and self.user_tokens is not None:
            try:
                return user_address(str(self.user_tokens.claims(str(token))["sub"]))
            except (TokenRefused, InvalidAddress) as error:
                logger.warning("call %s: user_token rejected (%s)", call.call_id, error)
        user_id = variables.get("user_id") or variables.get("userId")
        if user_id and self.trust_user_id_variable:
            try:
                return user_address(str(user_id))
            except InvalidAddress as error:
                logger.info("call %s: user_id not usable (%s)", call.call_id, error)
        digest = hashlib.sha256(str(call.call_id).encode("utf-8")).hexdigest()[:40]
        return anon_address(f"vapi-call-{digest}")

    def known_caller(self, call: Call, customer: Optional[Customer]) -> Optional[Address]:
        """The caller's address when the message names a call or a customer, else None."""
        if call.call_id or (customer and customer.number):
            return self.address(call, customer)
        return None

    async def conversation(self, call_id: str, address: Address) -> str:
        """The call's conversation, created on first contact. Remembered per call (a call's
        caller never changes), so later turns of the call skip the identity round trip."""
        cache_key = (call_id, str(address))
        conversation_id = self._conversations.get(cache_key)
        if conversation_id is None:
            conversation_id = await self.identity.resolve_conversation(address, channel=VOICE)
            self._conversations[cache_key] = conversation_id
            while len(self._conversations) > CALLS_REMEMBERED:
                self._conversations.popitem(last=False)
        else:
            self._conversations.move_to_end(cache_key)
        return conversation_id
