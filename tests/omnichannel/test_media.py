"""Media customers send (omnichannel/media.py): kinds and intents, types checked by their bytes,
and fetching, which only ever asks Twilio's media of our own account, with a size bound and a
timeout, against the local fake of Twilio (credentials required, a redirect to a short-lived
URL) and servers that must never be asked."""

from __future__ import annotations

import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from omnichannel.media import (
    FILE_INTENT,
    LOCATION_INTENT,
    PICTURE_INTENT,
    UNSUPPORTED_INTENT,
    VOICE_NOTE_INTENT,
    MediaRefused,
    content_matches,
    fetch_twilio_media,
    intent_for,
    is_twilio_media_url,
    media_kind,
    sniff_type,
)
from omnichannel.settings import Settings
from testkit.fake_http import FakeServer
from testkit.fake_twilio import FakeTwilio
from tests.support import JPEG, RecordingServer

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
PDF = b"%PDF-1.7\n" + b"\x00" * 32
OGG = b"OggS" + b"\x00" * 32
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 32
HTML = b"<!doctype html><script>alert(1)</script>"


def test_kinds_and_the_intent_media_alone_stands_for() -> None:
    assert media_kind("image/JPEG; charset=binary") == "image"
    assert media_kind("audio/ogg") == "audio"
    assert media_kind("application/x-msdownload") == "other"
    assert intent_for([{"kind": "image"}, {"kind": "audio"}], False) == PICTURE_INTENT
    assert intent_for([{"kind": "audio"}], False) == VOICE_NOTE_INTENT
    assert intent_for([{"kind": "document"}], False) == FILE_INTENT
    assert intent_for([{"kind": "other"}], False) == UNSUPPORTED_INTENT
    assert intent_for([], True) == LOCATION_INTENT
    assert intent_for([], False) is None


def test_types_are_checked_by_the_bytes() -> None:
    assert sniff_type(PNG) == "image/png" and sniff_type(JPEG) == "image/jpeg"
    assert sniff_type(PDF) == "application/pdf" and sniff_type(OGG) == "audio/ogg"
    assert sniff_type(MP4) == "video/mp4" and sniff_type(HTML) is None
    assert content_matches("image/png", PNG) and content_matches("image/jpg", JPEG)
    assert not content_matches("image/jpeg", HTML)  # a page that claims to be a photo
    assert not content_matches("image/png", PDF)
    assert not content_matches("text/html", HTML)  # not a type we take, whatever its bytes
    assert content_matches("audio/mp4", MP4) and content_matches("video/mp4", MP4)


def _settings(fake: FakeTwilio, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "TWILIO_ACCOUNT_SID": fake.account_sid,
            "TWILIO_AUTH_TOKEN": fake.auth_token,
            "TWILIO_PHONE_NUMBER": "+15005550006",
            "TWILIO_API_BASE_URL": fake.url,
            **extra,
        }
    )


def test_only_media_urls_of_our_own_account_on_twilio_are_fetchable() -> None:
    ours = "AC" + "1" * 32
    production = Settings.from_env(
        {
            "TWILIO_ACCOUNT_SID": ours,
            "TWILIO_AUTH_TOKEN": "t",
            "TWILIO_PHONE_NUMBER": "+15005550006",
        }
    )
    media = f"/2010-04-01/Accounts/{ours}/Messages/MM{'a' * 32}/Media/ME{'b' * 32}"
    assert is_twilio_media_url(f"https://api.twilio.com{media}", production)
    for url in (
        f"http://api.twilio.com{media}",  # not TLS
        f"https://api.twilio.com.evil.example{media}",
        f"https://evil.example{media}",
        f"https://api.twilio.com{media}?redirect=https://evil.example",
        f"https://user:pw@api.twilio.com{media}",
        f"https://api.twilio.com/2010-04-01/Accounts/AC{'2' * 32}/Messages/MM{'a' * 32}"
        f"/Media/ME{'b' * 32}",  # another account's media
        f"https://api.twilio.com/2010-04-01/Accounts/{ours}/Messages.json",
        "https://169.254.169.254/latest/meta-data/",
    ):
        assert not is_twilio_media_url(url, production), url


async def test_a_hostile_media_url_is_never_fetched(fake_twilio: FakeTwilio) -> None:
    internal = RecordingServer().start()
    try:
        settings = _settings(fake_twilio)
        for url in (
            f"{internal.url}/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages/"
            f"MM{'a' * 32}/Media/ME{'b' * 32}",
            f"{internal.url}/anything",
        ):
            with pytest.raises(MediaRefused) as refused:
                await fetch_twilio_media(url, settings)
            assert refused.value.reason == "host"
        assert internal.requests == []
    finally:
        internal.stop()


async def test_twilio_media_is_fetched_with_credentials_through_its_redirect(
    fake_twilio: FakeTwilio,
) -> None:
    url = fake_twilio.add_media(PNG, "image/png")
    fetched = await fetch_twilio_media(url, _settings(fake_twilio))
    assert (fetched.data, fetched.content_type) == (PNG, "image/png")
    # Without the account's credentials the fake answers 401, as Twilio does with enforced
    # HTTP auth on media.
    wrong = _settings(fake_twilio, **{"TWILIO_AUTH_TOKEN": secrets.token_hex(16)})
    with pytest.raises(MediaRefused) as refused:
        await fetch_twilio_media(url, wrong)
    assert refused.value.reason == "unavailable"


async def test_a_fetch_is_bounded_in_size(fake_twilio: FakeTwilio) -> None:
    url = fake_twilio.add_media(JPEG + b"\x00" * 4096, "image/jpeg")
    with pytest.raises(MediaRefused) as refused:
        await fetch_twilio_media(url, _settings(fake_twilio), max_bytes=1024)
    assert refused.value.reason == "too_large"


class _Hanging(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.server.fake.release.wait(10)  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        return


class HangingTwilio(FakeServer):
    """Twilio's API answering nothing (a media request that never completes)."""

    handler_class = _Hanging

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()


async def test_a_fetch_is_bounded_in_time() -> None:
    hanging = HangingTwilio().start()
    account = "AC" + "3" * 32
    settings = Settings.from_env(
        {
            "TWILIO_ACCOUNT_SID": account,
            "TWILIO_AUTH_TOKEN": "t",
            "TWILIO_PHONE_NUMBER": "+15005550006",
            "TWILIO_API_BASE_URL": hanging.url,
        }
    )
    url = f"{hanging.url}/2010-04-01/Accounts/{account}/Messages/MM{'a' * 32}/Media/ME{'b' * 32}"
    started = time.monotonic()
    try:
        with pytest.raises(MediaRefused) as refused:
            await fetch_twilio_media(url, settings, timeout=0.5)
    finally:
        hanging.release.set()
        hanging.stop()
    assert refused.value.reason == "unavailable"
    assert time.monotonic() - started < 5
