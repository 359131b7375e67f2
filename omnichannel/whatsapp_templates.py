"""WhatsApp templates as designers declare them on responses in domain.yml.

Outside WhatsApp's 24-hour window only an approved template can reach a customer. A response
that may need to (the refund policy "text me that" sends a day later, a tracking link) names
its template in Rasa's response metadata, beside its WhatsApp wording::

    utter_refund_policy:
      - text: "Here's our refund policy. …"
        metadata:
          sms_topic: "the refund policy"
          whatsapp_template:
            name: acme_refund_policy        # the template's name at Twilio and WhatsApp
            category: UTILITY               # UTILITY, MARKETING or AUTHENTICATION
            language: en                    # optional, default en
            samples:                        # one per {variable} in the text: approval needs them
              order_number: "12345"

The template's body is that variation's text in WhatsApp's formatting, each ``{slot}`` becoming a
numbered Content API variable (``{{1}}``, ``{{2}}``, … in order of first appearance); its
buttons, when it has any (not links), make it a ``twilio/quick-reply`` template, otherwise it is
``twilio/text``. ``make whatsapp-templates`` creates and submits them
(devtools/whatsapp_templates.py); the response check holds them to WhatsApp's approval rules
(:func:`template_problems`); the sender fills the variables from the same values Rasa fills the
text with (:func:`TemplateDeclaration.ref`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.whatsapp import CONTENT_BODY_MAX, QUICK_REPLY, whatsapp_text

TEMPLATE_KEY = "whatsapp_template"
CATEGORIES = ("UTILITY", "MARKETING", "AUTHENTICATION")
#: Meta's rule for a template's name: lowercase letters, digits and underscores.
NAME_PATTERN = re.compile(r"[a-z0-9_]{1,512}")
#: A Rasa response variable: ``{order_number}``.
RESPONSE_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
CONTENT_VARIABLE = re.compile(r"\{\{(\d+)\}\}")
#: twilio/text caps a body at 1,600; a template after substitution at 1,024 (error 63021).
TEMPLATE_BODY_MAX = CONTENT_BODY_MAX
#: Quick-reply buttons an approved template may carry (Twilio's twilio/quick-reply page).
TEMPLATE_MAX_BUTTONS = 10


@dataclass(frozen=True)
class TemplateRef:
    """An approved template to send: its name and the values of its numbered variables; None
    to read them off the message the template stands for (:func:`match_variables`)."""

    name: str
    variables: Optional[Mapping[str, str]] = None


def match_variables(body: str, text: str) -> Optional[Dict[str, str]]:
    """The values of ``body``'s ``{{n}}`` variables that make it read as ``text`` (a message's
    WhatsApp text, filled by Rasa from the same response), or None when ``text`` is not that
    template's wording. Lets a template stand for a message whose values are known only as
    text (a REST-triggered turn, an agent's reply picked from a response)."""
    pattern = ""
    position = 0
    seen: List[str] = []
    for match in CONTENT_VARIABLE.finditer(body):
        pattern += re.escape(body[position : match.start()])
        number = match.group(1)
        if number in seen:
            pattern += f"(?P=v{number})"
        else:
            pattern += f"(?P<v{number}>.+?)"
            seen.append(number)
        position = match.end()
    pattern += re.escape(body[position:])
    found = re.fullmatch(pattern, text.strip(), re.DOTALL)
    if found is None:
        return None
    return {number: found.group(f"v{number}") for number in seen}


@dataclass(frozen=True)
class TemplateDeclaration:
    """One response's ``whatsapp_template``, with the Content definition it stands for."""

    response: str
    name: str
    category: str
    language: str
    body: str
    #: Numbered variable -> the response variable (slot or keyword) it is filled from.
    variables: Tuple[Tuple[str, str], ...]
    samples: Mapping[str, str]
    buttons: Tuple[Tuple[str, str], ...] = ()

    @property
    def content_type(self) -> str:
        return QUICK_REPLY if self.buttons else "twilio/text"

    def types(self) -> Dict[str, Any]:
        """The Content API ``types`` of the template."""
        if self.buttons:
            actions = [{"title": title, "id": payload} for title, payload in self.buttons]
            return {QUICK_REPLY: {"body": self.body, "actions": actions}}
        return {"twilio/text": {"body": self.body}}

    def sample_variables(self) -> Dict[str, str]:
        """The Content resource's ``variables``: a sample value per number (approval needs
        them)."""
        return {number: str(self.samples.get(name, "")) for number, name in self.variables}

    def ref(self, values: Mapping[str, Any]) -> Optional[TemplateRef]:
        """The template filled with ``values`` (slots and keyword arguments, as Rasa fills the
        text), or None when one of its variables has no value (it cannot be sent then)."""
        filled: Dict[str, str] = {}
        for number, name in self.variables:
            value = values.get(name)
            if value is None or str(value).strip() == "":
                return None
            filled[number] = str(value)
        return TemplateRef(self.name, filled)


def _numbered(text: str) -> Tuple[str, Tuple[Tuple[str, str], ...]]:
    """``text`` with ``{name}`` replaced by ``{{n}}`` (the same name, the same number)."""
    numbers: Dict[str, str] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in numbers:
            numbers[name] = str(len(numbers) + 1)
        return "{{" + numbers[name] + "}}"

    body = RESPONSE_VARIABLE.sub(number, text)
    return body, tuple((n, name) for name, n in numbers.items())


def declaration_of(response: str, variation: Mapping[str, Any]) -> Optional[TemplateDeclaration]:
    """The template a response variation declares, or None. Malformed declarations still
    give one (with what could be read), so the response check can name what is wrong."""
    metadata = variation.get("metadata")
    declared = metadata.get(TEMPLATE_KEY) if isinstance(metadata, Mapping) else None
    if not isinstance(declared, Mapping):
        return None
    message = BotMessage.from_rasa(
        {k: v for k, v in variation.items() if k not in ("channel", "condition", "metadata")}
    )
    body, variables = _numbered(whatsapp_text(message.text))
    samples = declared.get("samples")
    return TemplateDeclaration(
        response=response,
        name=str(declared.get("name") or ""),
        category=str(declared.get("category") or "").upper(),
        language=str(declared.get("language") or "en"),
        body=body,
        variables=variables,
        samples=(
            {str(k): str(v) for k, v in samples.items()} if isinstance(samples, Mapping) else {}
        ),
        buttons=tuple(
            (b.title, b.payload)
            for b in message.buttons
            if not b.payload.lower().startswith(("http://", "https://"))
        ),
    )


def declarations(responses: Mapping[str, Sequence[Mapping[str, Any]]]) -> List[TemplateDeclaration]:
    """Every template the domain's responses declare, in the domain's order."""
    found = []
    for name, variations in responses.items():
        for variation in variations or ():
            declaration = declaration_of(name, variation)
            if declaration is not None:
                found.append(declaration)
    return found


def template_for(
    responses: Mapping[str, Sequence[Mapping[str, Any]]],
    response: Optional[str],
    values: Mapping[str, Any],
) -> Optional[TemplateRef]:
    """The filled template of ``response`` (the first of its variations that declares one),
    or None when it declares none or a variable has no value."""
    for variation in responses.get(response or "") or ():
        declaration = declaration_of(str(response), variation)
        if declaration is not None:
            return declaration.ref(values)
    return None


def template_of(message: Mapping[str, Any]) -> Optional[TemplateRef]:
    """The template a bot message (Rasa's message dict or bot event) names, through its
    response's ``metadata.whatsapp_template`` (nested one level, where Rasa keeps a response's
    metadata) or an action's own ``whatsapp_template`` keyword; its variables are read off the
    message's text when sent (:func:`match_variables`)."""
    found = message.get("metadata")
    metadata: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    for source in (message, metadata, metadata.get("metadata") or {}):
        declared = source.get(TEMPLATE_KEY) if isinstance(source, Mapping) else None
        if isinstance(declared, Mapping) and declared.get("name"):
            variables = declared.get("variables")
            return TemplateRef(
                str(declared["name"]),
                {str(k): str(v) for k, v in variables.items()}
                if isinstance(variables, Mapping)
                else None,
            )
        if isinstance(declared, str) and declared:
            return TemplateRef(declared)
    return None


def template_problems(declaration: TemplateDeclaration) -> List[Tuple[str, str]]:
    """``(code, detail)`` for each way WhatsApp would refuse to approve (or Twilio to send)
    the template: the response check reports them."""
    problems: List[Tuple[str, str]] = []
    if not NAME_PATTERN.fullmatch(declaration.name):
        problems.append(
            ("template-name", f"name {declaration.name!r} must be lowercase letters, digits, _")
        )
    if declaration.category not in CATEGORIES:
        problems.append(
            (
                "template-category",
                f"category {declaration.category or '(none)'!r} is not one of "
                + ", ".join(CATEGORIES),
            )
        )
    body = declaration.body.strip()
    if not body:
        problems.append(("template-empty", "the template has no text"))
    if CONTENT_VARIABLE.match(body) or re.search(r"\{\{\d+\}\}$", body):
        problems.append(
            (
                "template-variable-edge",
                "the text starts or ends with a variable: WhatsApp rejects it",
            )
        )
    if re.search(r"\}\}\s*\{\{", body):
        problems.append(
            ("template-adjacent-variables", "two variables side by side: WhatsApp rejects it")
        )
    missing = [name for _, name in declaration.variables if not declaration.samples.get(name)]
    if missing:
        problems.append(
            ("template-sample", "no sample for " + ", ".join(missing) + " (approval needs one)")
        )
    longest = declaration.body
    for number, name in declaration.variables:
        longest = longest.replace("{{" + number + "}}", declaration.samples.get(name, ""))
    if len(longest) > TEMPLATE_BODY_MAX:
        problems.append(
            (
                "template-length",
                f"{len(longest)} characters with its samples: a template holds {TEMPLATE_BODY_MAX}",
            )
        )
    if len(declaration.buttons) > TEMPLATE_MAX_BUTTONS:
        problems.append(
            ("template-buttons", f"{len(declaration.buttons)} buttons: a template holds 10")
        )
    return problems
