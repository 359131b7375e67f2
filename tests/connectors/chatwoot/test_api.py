"""The Application API client against the fake Chatwoot (a real HTTP server following the
documented API): the auth header, the answers' shapes, and failures typed for the retries."""

from __future__ import annotations

import secrets

import pytest

from connectors.chatwoot.api import ChatwootApi, ChatwootRefused, ChatwootUnavailable
from testkit.fake_chatwoot import AFTER_CREATE_DROP, FakeChatwoot


@pytest.fixture
def chatwoot() -> FakeChatwoot:
    fake = FakeChatwoot(account_id=3, inbox_id=12).start()
    yield fake
    fake.stop()


def session(fake: FakeChatwoot, token: str = "") -> ChatwootApi:
    return ChatwootApi.session(fake.url, fake.account_id, token or fake.access_token, 5.0)


async def test_contact_conversation_and_messages_round_trip(chatwoot: FakeChatwoot) -> None:
    async with session(chatwoot) as api:
        contact = await api.create_contact(
            {"inbox_id": 12, "name": "Customer", "identifier": "c_1"}
        )
        assert contact["identifier"] == "c_1" and contact["source_id"]
        conversation = await api.create_conversation(
            {
                "source_id": contact["source_id"],
                "inbox_id": 12,
                "contact_id": contact["id"],
                "status": "open",
                "additional_attributes": {"omni_handoff_id": "h1"},
            }
        )
        number = conversation["id"]
        first = await api.create_message(
            number, {"content": "hello", "message_type": "incoming", "source_id": "omni:h1:e0"}
        )
        assert first["message_type"] == 0 and first["source_id"] == "omni:h1:e0"
        for n in range(25):
            await api.create_message(
                number, {"content": f"note {n}", "private": True, "source_id": f"omni:h1:n{n}"}
            )
        latest = await api.messages(number)
        assert len(latest) == 20 and latest[-1]["content"] == "note 24"
        found = await api.find_message(number, "omni:h1:e0", after_id=0)
        assert found is not None and found["id"] == first["id"], "found on an older page"
        assert await api.find_message(number, "omni:h1:e0", after_id=first["id"]) is None
        [listed] = await api.contact_conversations(contact["id"])
        assert listed["additional_attributes"] == {"omni_handoff_id": "h1"}
        await api.toggle_status(number, "resolved")
    assert chatwoot.conversations[number].status == "resolved"


async def test_a_taken_identifier_is_refused_and_the_contact_found_by_search(
    chatwoot: FakeChatwoot,
) -> None:
    async with session(chatwoot) as api:
        await api.create_contact({"inbox_id": 12, "name": "Customer", "identifier": "c_1"})
        with pytest.raises(ChatwootRefused) as refused:
            await api.create_contact({"inbox_id": 12, "name": "Customer", "identifier": "c_1"})
        assert refused.value.status == 422 and "Identifier has already been taken" in str(
            refused.value
        )
        [found] = await api.search_contacts("c_1")
        assert found["contact_inboxes"][0]["inbox"]["id"] == 12
        assert await api.create_contact_inbox(found["id"], 12)


async def test_a_wrong_token_is_refused(chatwoot: FakeChatwoot) -> None:
    async with session(chatwoot, token=secrets.token_urlsafe(8)) as api:
        with pytest.raises(ChatwootRefused) as refused:
            await api.search_contacts("x")
    assert refused.value.status == 401


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_errors_are_worth_retrying(
    chatwoot: FakeChatwoot, status: int
) -> None:
    chatwoot.fail_next(status, operation="search_contacts")
    async with session(chatwoot) as api:
        with pytest.raises(ChatwootUnavailable) as failed:
            await api.search_contacts("x")
        assert failed.value.status == status
        assert await api.search_contacts("x") == []


async def test_a_lost_answer_is_unavailable_and_the_message_exists(chatwoot: FakeChatwoot) -> None:
    async with session(chatwoot) as api:
        contact = await api.create_contact({"inbox_id": 12, "name": "C", "identifier": "c_2"})
        conversation = await api.create_conversation(
            {"source_id": contact["source_id"], "inbox_id": 12}
        )
        chatwoot.fail_after_create("create_message", AFTER_CREATE_DROP)
        with pytest.raises(ChatwootUnavailable):
            await api.create_message(conversation["id"], {"content": "x", "source_id": "omni:h:e1"})
        assert await api.find_message(conversation["id"], "omni:h:e1", 0) is not None


async def test_an_unreachable_chatwoot_is_unavailable() -> None:
    fake = FakeChatwoot().start()
    url = fake.url
    fake.stop()
    async with ChatwootApi.session(url, 1, "t", 2.0) as api:
        with pytest.raises(ChatwootUnavailable):
            await api.search_contacts("x")
