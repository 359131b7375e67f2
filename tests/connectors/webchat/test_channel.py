"""The input channel: its options and secrets at start-up, and the page and files it serves."""

from __future__ import annotations

import secrets

import httpx
import pytest
import yaml

from connectors.webchat.channel import SECTION, WebChatInput, WebChatOptions
from omnichannel.errors import ConfigError
from testkit.processes import ROOT
from testkit.stack import RasaStack


@pytest.mark.unit
def test_configuration_errors_name_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBCHAT_JWT_SECRET", raising=False)
    with pytest.raises(ConfigError, match="WEBCHAT_JWT_SECRET"):
        WebChatInput.from_credentials({})
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", "x" * 31)
    with pytest.raises(ConfigError, match="WEBCHAT_JWT_SECRET must be at least 32 bytes"):
        WebChatInput.from_credentials({})
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", secrets.token_urlsafe(32))
    with pytest.raises(ConfigError, match="history_pages"):
        WebChatInput.from_credentials({"history_pages": 3})
    with pytest.raises(ConfigError, match="rate_limit_burst: ensure this value is greater"):
        WebChatInput.from_credentials({"rate_limit_burst": 0})
    channel = WebChatInput.from_credentials({"history_page_size": 20})
    assert channel.options.history_page_size == 20 and channel.name() == "webchat"


@pytest.mark.unit
def test_options_keep_their_defaults_convert_and_check_bounds() -> None:
    assert WebChatOptions.parse(SECTION, None) == WebChatOptions(
        history_page_size=50,
        auth_timeout=10.0,
        rate_limit_burst=10,
        rate_limit_per_second=1.0,
        client_message_id_ttl=86400,
        anonymous_token_lifetime=30 * 86400,
        jwt_audience=None,
    )
    converted = WebChatOptions.parse(SECTION, {"history_page_size": "20", "auth_timeout": "2.5"})
    assert (converted.history_page_size, converted.auth_timeout) == (20, 2.5)
    for key, value in [
        ("history_page_size", 201),
        ("auth_timeout", 0),
        ("rate_limit_per_second", 0),
        ("client_message_id_ttl", 0),
        ("anonymous_token_lifetime", -1),
        ("jwt_audience", ""),
        ("rate_limit_burst", "ten"),
    ]:
        with pytest.raises(ConfigError, match=f"{SECTION}: {key}: "):
            WebChatOptions.parse(SECTION, {key: value})


@pytest.mark.unit
def test_the_credentials_file_names_the_channel_and_its_empty_keys_take_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", secrets.token_urlsafe(32))
    credentials = yaml.safe_load((ROOT / "credentials.yml").read_text(encoding="utf-8"))
    channel = WebChatInput.from_credentials(credentials[SECTION])
    assert channel.options == WebChatOptions()
    assert WebChatInput.from_credentials({"history_page_size": None}).options == WebChatOptions()


@pytest.mark.rasa_server
async def test_page_and_assets_are_served(rasa_stack: RasaStack) -> None:
    async with httpx.AsyncClient(base_url=rasa_stack.base_url) as http:
        page = await http.get("/webhooks/webchat/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "widget.js" in page.text and "http://" not in page.text.replace(
            "http://www.w3.org", ""
        )
        bare = await http.get("/webhooks/webchat", follow_redirects=True)
        assert bare.status_code == 200 and bare.url.path == "/webhooks/webchat/"
        script = await http.get("/webhooks/webchat/static/widget.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        style = await http.get("/webhooks/webchat/static/widget.css")
        assert style.status_code == 200 and "text/css" in style.headers["content-type"]
        assert (await http.get("/webhooks/webchat/static/../webchat.py")).status_code == 404
        assert (await http.get("/webhooks/webchat/static/../channel.py")).status_code == 404
        assert (await http.get("/webhooks/webchat/static/secrets.env")).status_code == 404
