"""Files a chat customer attaches (``POST/GET /webhooks/webchat/files``, omnichannel/uploads.py):
bounded, type-checked by their bytes, kept with the customer's own conversation, served back
only with a safe type; a message that names them reaches Rasa with their media, and a photo
joins the refund request the chat started. Through the shared stack."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from omnichannel.uploads import MAX_UPLOAD_BYTES
from testkit.stack import RasaStack
from tests.connectors.webchat.helpers import open_chat, recv_until, user_token
from tests.support import JPEG, seed_order

pytestmark = pytest.mark.rasa_server

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def files_url(stack: RasaStack, upload_id: str = "") -> str:
    return f"{stack.base_url}/webhooks/webchat/files" + (f"/{upload_id}" if upload_id else "")


def upload(stack: RasaStack, token: str, data: bytes, name: str = "photo.jpg") -> httpx.Response:
    return httpx.post(
        files_url(stack),
        content=data,
        headers={"Authorization": f"Bearer {token}", "X-File-Name": name},
        timeout=30,
    )


def token_for(stack: RasaStack, **claims) -> str:
    return user_token(stack.env["WEBCHAT_JWT_SECRET"], "files-" + secrets.token_hex(4), **claims)


def test_an_upload_is_checked_by_its_bytes_and_served_back_safely(rasa_stack: RasaStack) -> None:
    token = token_for(rasa_stack)
    stored = upload(rasa_stack, token, JPEG, name="..\\..\\etc\\<b>damage.jpg")
    assert stored.status_code == 201, stored.text
    media = stored.json()
    assert media["kind"] == "image" and media["content_type"] == "image/jpeg"
    assert media["size"] == len(JPEG) and media["name"] == "_b_damage.jpg"
    assert media["url"] == f"/webhooks/webchat/files/{media['upload_id']}"
    back = httpx.get(
        files_url(rasa_stack, media["upload_id"]), headers={"Authorization": f"Bearer {token}"}
    )
    assert back.status_code == 200 and back.content == JPEG
    assert back.headers["content-type"] == "image/jpeg"
    assert back.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in back.headers["content-security-policy"]
    document = upload(rasa_stack, token, PDF, name="receipt.pdf").json()
    served = httpx.get(
        files_url(rasa_stack, document["upload_id"]), headers={"Authorization": f"Bearer {token}"}
    )
    assert served.headers["content-disposition"].startswith("attachment;")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"<html><script>alert(1)</script></html>", 415, "type"),  # a page named photo.jpg
        (b"MZ\x90\x00" + b"\x00" * 64, 415, "type"),  # an executable
        (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", 415, "type"),
        (b"", 400, "empty"),
    ],
    ids=["html", "executable", "svg", "empty"],
)
def test_what_is_not_a_photo_or_a_pdf_is_refused(
    rasa_stack: RasaStack, data: bytes, status: int, code: str
) -> None:
    answer = upload(rasa_stack, token_for(rasa_stack), data)
    assert answer.status_code == status and answer.json()["code"] == code
    assert "photos" in answer.json()["error"] or code == "empty"


def test_uploads_are_bounded_and_private(rasa_stack: RasaStack) -> None:
    token = token_for(rasa_stack)
    big = upload(rasa_stack, token, JPEG + b"\x00" * MAX_UPLOAD_BYTES)
    assert big.status_code == 413
    assert httpx.post(files_url(rasa_stack), content=JPEG).status_code == 401
    forged = user_token("x" * 40, "intruder")
    assert upload(rasa_stack, forged, JPEG).status_code == 401
    mine = upload(rasa_stack, token, JPEG).json()["upload_id"]
    other = token_for(rasa_stack)
    stolen = httpx.get(files_url(rasa_stack, mine), headers={"Authorization": f"Bearer {other}"})
    assert stolen.status_code == 404  # another customer's conversation has no such file


async def test_a_photo_sent_in_the_chat_joins_the_refund_request(rasa_stack: RasaStack) -> None:
    phone = f"+1415555{secrets.randbelow(10000):04d}"
    order = seed_order(rasa_stack, phone=phone, like="55555")
    token = token_for(rasa_stack, phone=phone)
    chat = await open_chat(rasa_stack, token)
    try:
        await chat.say("I want a refund")
        await chat.turn_done()
        await chat.say(order)
        asked = await chat.next_bot()
        assert asked["text"].startswith(f"Do you want me to start a refund for order {order} (")
        await chat.turn_done()
        await chat.say("yes")
        invite = await recv_until(
            chat.ws,
            lambda f: f["type"] == "message" and "send a photo" in f["message"].get("text", ""),
        )
        assert invite["message"]["role"] == "bot"
        await chat.turn_done()
        photo = upload(rasa_stack, token, JPEG).json()
        await chat.ws.send(
            json.dumps(
                {
                    "type": "message",
                    "id": secrets.token_hex(8),
                    "text": "",
                    "attachments": [photo["upload_id"]],
                }
            )
        )
        thanks = await chat.next_bot()
        assert thanks["text"] == (
            f"Thanks for the photo of the damage: I've added it to your refund request for "
            f"order {order}."
        )
        await chat.turn_done()
        # Another tab shows the photo in the history (its URL, read with the token).
        other_tab = await open_chat(rasa_stack, token)
        await other_tab.ws.close()
        [sent] = [m for m in other_tab.history["messages"] if m.get("media")]
        assert sent["role"] == "user" and sent["text"] == ""
        assert sent["media"] == [
            {
                "kind": "image",
                "content_type": "image/jpeg",
                "name": "photo.jpg",
                "size": len(JPEG),
                "url": photo["url"],
            }
        ]
        # An attachment of no upload (or another conversation's) is refused, unacknowledged.
        await chat.ws.send(
            json.dumps(
                {
                    "type": "message",
                    "id": secrets.token_hex(8),
                    "text": "see this",
                    "attachments": ["u_" + "A" * 22],
                }
            )
        )
        error = await recv_until(chat.ws, lambda f: f["type"] == "error")
        assert error["code"] == "bad_frame" and "attachment was not found" in error["message"]
    finally:
        await chat.ws.close()
