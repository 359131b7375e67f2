"""The response check (devtools/responses.py): each silent failure it exists for is caught and
named, and the project's own domain passes."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from devtools.responses import ROOT, check, load_responses, main, preview

pytestmark = pytest.mark.unit


def problems(tmp_path: Path, domain: str, **options: int) -> List[str]:
    path = tmp_path / "domain.yml"
    path.write_text(domain)
    return [f"{p.response} {p.channel} {p.code}" for p in check(load_responses(path), **options)]


def test_the_project_domain_passes(capsys: pytest.CaptureFixture) -> None:
    assert check(load_responses(ROOT / "domain.yml")) == []
    assert main(["check"]) == 0
    assert "no problems" in capsys.readouterr().err


def test_a_response_with_only_a_voice_variation_has_no_sms_or_chat_reply(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
responses:
  utter_only_voice:
    - channel: vapi
      text: "Hello caller."
""",
    )
    assert found == [
        "utter_only_voice sms no-default",
        "utter_only_voice whatsapp no-default",
        "utter_only_voice chat no-default",
    ]


def test_only_conditional_variations_leave_a_gap(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
responses:
  utter_status:
    - condition:
        - type: slot
          name: order_number
          value: "12345"
      text: "Order 12345 is on its way."
""",
    )
    assert found == [
        f"utter_status {kind} no-default" for kind in ("voice", "sms", "whatsapp", "chat")
    ]


def test_a_url_button_is_refused_on_sms_and_voice_but_fine_in_chat(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
responses:
  utter_track:
    - text: "Track your parcel."
      buttons:
        - title: "Track package"
          payload: "https://track.example.com/123"
""",
    )
    assert found == ["utter_track voice url-button", "utter_track sms url-button"]


def test_one_emoji_in_a_long_sms_is_named_with_its_cost(tmp_path: Path) -> None:
    long_text = "Our refund policy is simple. " * 36 + "Thanks! \U0001f642"
    path = tmp_path / "domain.yml"
    path.write_text(f'responses:\n  utter_long:\n    - text: "{long_text}"\n')
    found = check(load_responses(path), max_sms_segments=20)
    assert [(p.channel, p.code) for p in found] == [("sms", "sms-ucs2")]
    assert "U+1F642" in found[0].detail
    assert "16 segment(s) instead of 7" in found[0].detail


def test_sms_over_the_segment_bound(tmp_path: Path) -> None:
    text = "word " * 200
    domain = f'responses:\n  utter_essay:\n    - text: "{text.strip()}"\n'
    assert problems(tmp_path, domain, max_sms_segments=4) == ["utter_essay sms sms-segments"]
    assert problems(tmp_path, domain, max_sms_segments=7) == []


def test_what_the_voice_renderer_cannot_clean_is_reported(tmp_path: Path) -> None:
    """Markdown and web addresses with a scheme are removed from speech by the renderer; bare
    addresses, tables and HTML are not, and the check names them."""
    assert (
        problems(
            tmp_path,
            """
responses:
  utter_link:
    - text: "See **our page** at https://shop.example.com/help for `more`."
""",
        )
        == []
    )
    found = problems(
        tmp_path,
        """
responses:
  utter_returns:
    - text: "Start a return at acme.com/returns any time."
  utter_table:
    - text: "| size | price |\n| S | $5 |"
  utter_html:
    - text: "This is <b>important</b>."
""",
    )
    assert found == [
        "utter_returns voice speech-url",
        "utter_table voice speech-markdown",
        "utter_html voice speech-markdown",
    ]


def test_channel_names_must_be_connector_names(tmp_path: Path) -> None:
    path = tmp_path / "domain.yml"
    path.write_text(
        """
responses:
  utter_hi:
    - text: "Hi"
    - channel: sms
      text: "Hi by text"
"""
    )
    found = check(load_responses(path))
    assert [(p.response, p.code) for p in found] == [("utter_hi", "unknown-channel")]
    assert "did you mean twilio_sms?" in found[0].detail


def test_a_condition_shadowed_by_a_channel_variation_is_reported(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
responses:
  utter_hi:
    - text: "Hi"
    - condition:
        - type: slot
          name: vip
          value: true
      text: "Welcome back, VIP!"
    - channel: twilio_sms
      text: "Hi by text"
""",
    )
    assert found == ["utter_hi sms shadowed-condition"]


def test_preview_shows_each_channel_form(capsys: pytest.CaptureFixture) -> None:
    responses = load_responses(ROOT / "domain.yml")
    shown = preview("utter_greet", responses["utter_greet"])
    assert "says: Hi, this is the Acme Shop assistant." in shown
    assert "Reply 1 for Order status, 2 for Refund policy." in shown
    assert "1 segment(s), GSM-7" in shown
    assert "<strong>Acme Shop</strong>" in shown
    assert main(["preview", "utter_nope"]) == 2


def test_whatsapp_forms_are_checked(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
responses:
  utter_many:
    - text: "Pick one of these"
      buttons:
        - {title: "A title much too long for any list", payload: "/a"}
        - {title: "B", payload: "/b"}
  utter_bold:
    - text: "Hi"
    - channel: whatsapp
      text: "Hi *there*, and **this** is bold"
  utter_gif:
    - text: "Look"
      image: "https://acme.example/dance.gif"
  utter_webp:
    - text: "Look"
      image: "https://acme.example/photo.webp"
""",
    )
    assert "utter_many whatsapp whatsapp-buttons" in found
    assert "utter_bold whatsapp whatsapp-emphasis" in found
    assert "utter_gif whatsapp media-type" in found
    assert "utter_webp sms media-type" in found
    assert "utter_webp whatsapp media-type" not in found and "utter_gif sms media-type" not in found


def test_templates_whatsapp_would_reject_are_named(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
responses:
  utter_track:
    - text: "Track order {order_number} at {url}"
      metadata:
        whatsapp_template: {name: acme_track, category: UTILITY, samples: {order_number: "1"}}
  utter_one:
    - text: "Your order has shipped."
      metadata:
        whatsapp_template: {name: acme_same, category: UTILITY}
  utter_two:
    - text: "Your order is late."
      metadata:
        whatsapp_template: {name: acme_same, category: Promo}
""",
    )
    assert found == [
        "utter_track None template-variable-edge",
        "utter_track None template-sample",
        "utter_two None template-category",
        "utter_two None template-duplicate",
    ]


def test_preview_shows_the_whatsapp_form_and_its_template(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["preview", "utter_greet"]) == 0
    shown = capsys.readouterr().out
    whatsapp = shown[shown.index("== whatsapp (whatsapp) ==") : shown.index("== chat")]
    assert "Hi! I'm the *Acme Shop* assistant" in whatsapp
    assert "[quick replies] Where's my order? | Start a refund | Refund policy" in whatsapp
    assert main(["preview", "utter_refund_policy"]) == 0
    assert "outside the 24-hour window: template acme_refund_policy (UTILITY)" in (
        capsys.readouterr().out
    )
