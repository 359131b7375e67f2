"""``make whatsapp-templates`` (devtools/whatsapp_templates.py) against the local fake of Twilio's
Content API: templates created and submitted once, reported as WhatsApp judges them, a changed
text refused unless replaced, and nothing sent that WhatsApp would reject."""

from __future__ import annotations

import io
import secrets
from pathlib import Path

from devtools.responses import load_responses
from devtools.whatsapp_templates import main, sync
from omnichannel.settings import Settings
from omnichannel.twilio_content import ContentApi
from omnichannel.whatsapp_templates import declarations
from testkit.fake_twilio import FakeTwilio


def _domain(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "domain.yml"
    path.write_text(
        f"""
responses:
  utter_shipped:
    - text: "{text}"
      metadata:
        whatsapp_template:
          name: {name}
          category: UTILITY
          samples: {{order_number: "12345"}}
      buttons:
        - {{title: "Track it", payload: "/ask_tracking_number"}}
  utter_bad:
    - text: "{{order_number}} shipped"
      metadata:
        whatsapp_template: {{name: {name}_bad, category: UTILITY}}
"""
    )
    return path


def _api(fake: FakeTwilio) -> ContentApi:
    return ContentApi(
        Settings.from_env(
            {
                "TWILIO_ACCOUNT_SID": fake.account_sid,
                "TWILIO_AUTH_TOKEN": fake.auth_token,
                "TWILIO_PHONE_NUMBER": "+15005550006",
                "TWILIO_API_BASE_URL": fake.url,
            }
        )
    )


async def test_templates_are_created_once_submitted_and_reported(
    fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    name = f"acme_shipped_{secrets.token_hex(3)}"
    wanted = declarations(
        load_responses(
            _domain(tmp_path, name, "Order {order_number} has shipped. Questions? Reply here.")
        )
    )
    out = io.StringIO()
    assert await sync(_api(fake_twilio), wanted, out=out) == 1  # utter_bad cannot be approved
    report = out.getvalue()
    assert f"{name}_bad (utter_bad): template-variable-edge" in report
    assert f"{name}: created HX" in report and f"{name}: approved HX" in report
    [content] = fake_twilio.content.by_name(name)
    assert content.types == {
        "twilio/quick-reply": {
            "body": "Order {{1}} has shipped. Questions? Reply here.",
            "actions": [{"title": "Track it", "id": "/ask_tracking_number"}],
        }
    }
    assert content.variables == {"1": "12345"}
    assert content.approval["category"] == "UTILITY" and not fake_twilio.content.by_name(
        f"{name}_bad"
    )
    # Run again: nothing new is created; --check finds nothing to do for it.
    again = io.StringIO()
    await sync(_api(fake_twilio), wanted[:1], out=again)
    assert len(fake_twilio.content.by_name(name)) == 1 and f"{name}: approved" in again.getvalue()
    assert await sync(_api(fake_twilio), wanted[:1], check_only=True, out=io.StringIO()) == 0


async def test_a_changed_text_is_refused_unless_replaced_and_pending_is_reported(
    fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    name = f"acme_late_{secrets.token_hex(3)}"
    first = declarations(
        load_responses(_domain(tmp_path, name, "Order {order_number} is late. Sorry!"))
    )[:1]
    assert await sync(_api(fake_twilio), first, out=io.StringIO()) == 0
    changed = declarations(
        load_responses(_domain(tmp_path, name, "Order {order_number} is delayed. Sorry!"))
    )[:1]
    out = io.StringIO()
    assert await sync(_api(fake_twilio), changed, check_only=True, out=out) == 1
    assert await sync(_api(fake_twilio), changed, out=out) == 1
    assert "run with --replace" in out.getvalue()
    fake_twilio.content.auto_approve = False
    try:
        replaced = io.StringIO()
        assert await sync(_api(fake_twilio), changed, replace=True, out=replaced) == 0
    finally:
        fake_twilio.content.auto_approve = True
    [content] = fake_twilio.content.by_name(name)
    assert "delayed" in content.body and content.approval["status"] == "pending"
    assert f"{name}: pending" in replaced.getvalue()


def test_the_command_reads_the_domain_and_says_when_twilio_is_unreachable(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    domain = tmp_path / "domain.yml"
    domain.write_text('responses:\n  utter_x:\n    - text: "no template here"\n')
    assert main(["--domain", str(domain)]) == 0
    assert "no response declares a whatsapp_template" in capsys.readouterr().out
    for name, value in {
        "TWILIO_ACCOUNT_SID": "AC" + "4" * 32,
        "TWILIO_AUTH_TOKEN": secrets.token_hex(8),
        "TWILIO_PHONE_NUMBER": "+15005550006",
        "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
    }.items():
        monkeypatch.setenv(name, value)
    declared = _domain(tmp_path, "acme_unreachable", "Order {order_number} shipped. Thanks!")
    assert main(["--domain", str(declared)]) == 2
    assert "Content API" in capsys.readouterr().err
