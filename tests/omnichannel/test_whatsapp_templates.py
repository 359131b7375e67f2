"""Templates declared on responses (omnichannel/whatsapp_templates.py): the Content definition
they stand for, WhatsApp's approval rules, and filling their variables. Pure."""

from __future__ import annotations

from omnichannel.whatsapp_templates import (
    TemplateRef,
    declaration_of,
    declarations,
    match_variables,
    template_for,
    template_of,
    template_problems,
)

SHIPPED = {
    "text": "Order **{order_number}** ships on {day}. Reply here with any question.",
    "metadata": {
        "whatsapp_template": {
            "name": "acme_shipping",
            "category": "utility",
            "samples": {"order_number": "12345", "day": "Monday"},
        }
    },
}


def test_a_declaration_numbers_the_variables_in_whatsapp_formatting() -> None:
    declaration = declaration_of("utter_shipping", SHIPPED)
    assert declaration is not None
    assert declaration.body == "Order *{{1}}* ships on {{2}}. Reply here with any question."
    assert declaration.variables == (("1", "order_number"), ("2", "day"))
    assert declaration.category == "UTILITY" and declaration.language == "en"
    assert declaration.types() == {"twilio/text": {"body": declaration.body}}
    assert declaration.sample_variables() == {"1": "12345", "2": "Monday"}
    assert template_problems(declaration) == []
    assert declaration.ref({"order_number": "40213", "day": "Tuesday"}) == TemplateRef(
        "acme_shipping", {"1": "40213", "2": "Tuesday"}
    )
    assert declaration.ref({"order_number": "40213"}) is None


def test_buttons_make_a_quick_reply_template() -> None:
    variation = {
        **SHIPPED,
        "buttons": [
            {"title": "Track", "payload": "/ask_tracking_number"},
            {"title": "Site", "payload": "https://acme.example"},
        ],
    }
    declaration = declaration_of("utter_shipping", variation)
    assert declaration.content_type == "twilio/quick-reply"
    assert declaration.types()["twilio/quick-reply"]["actions"] == [
        {"title": "Track", "id": "/ask_tracking_number"}
    ]


def test_what_whatsapp_would_reject_is_named() -> None:
    def codes(text: str, **declared) -> list:
        variation = {
            "text": text,
            "metadata": {
                "whatsapp_template": {"name": "ok_name", "category": "UTILITY", **declared}
            },
        }
        return [code for code, _ in template_problems(declaration_of("utter_x", variation))]

    assert codes("{order_number} is here", samples={"order_number": "1"}) == [
        "template-variable-edge"
    ]
    assert codes("Track it at {url}", samples={"url": "https://t.example"}) == [
        "template-variable-edge"
    ]
    assert codes("Hi {a}{b} there", samples={"a": "1", "b": "2"}) == ["template-adjacent-variables"]
    assert codes("Hi {a} there") == ["template-sample"]
    assert codes("Fine", name="Not Allowed") == ["template-name"]
    assert codes("Fine", category="PROMO") == ["template-category"]
    assert codes("x" * 1025) == ["template-length"]


def test_variables_are_read_off_the_text_a_template_stands_for() -> None:
    body = "Order *{{1}}* ships on {{2}}. Reply here with any question."
    text = "Order *40213* ships on Tuesday, March 4. Reply here with any question."
    assert match_variables(body, text) == {"1": "40213", "2": "Tuesday, March 4"}
    assert match_variables(body, "Something else entirely.") is None
    assert match_variables("No variables.", "No variables.") == {}
    assert match_variables("{{1}} and {{1}} again", "x and x again") == {"1": "x"}
    assert match_variables("{{1}} and {{1}} again", "x and y again") is None


def test_a_message_names_its_template_where_rasa_keeps_it() -> None:
    # A response's metadata, one level down in the bot message (Rasa's layout).
    assert template_of({"metadata": {"whatsapp_template": {"name": "a"}}}) == TemplateRef("a")
    assert template_of(
        {"metadata": {"metadata": {"whatsapp_template": {"name": "b"}}}}
    ) == TemplateRef("b")
    # An action's keyword, with its variables.
    assert template_of({"whatsapp_template": {"name": "c", "variables": {"1": 5}}}) == (
        TemplateRef("c", {"1": "5"})
    )
    assert template_of({"text": "plain"}) is None


def test_the_domain_declares_and_fills_templates() -> None:
    responses = {
        "utter_shipping": [{"text": "No template"}, SHIPPED],
        "utter_plain": [{"text": "x"}],
    }
    assert [d.name for d in declarations(responses)] == ["acme_shipping"]
    assert template_for(responses, "utter_shipping", {"order_number": "1", "day": "Mon"}) == (
        TemplateRef("acme_shipping", {"1": "1", "2": "Mon"})
    )
    assert template_for(responses, "utter_plain", {}) is None
    assert template_for(responses, None, {}) is None
