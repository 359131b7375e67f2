"""``make whatsapp-templates``: the WhatsApp templates domain.yml declares, created at Twilio's
Content API and submitted to WhatsApp for approval.

Each response variation with ``metadata.whatsapp_template`` (omnichannel/whatsapp_templates.py)
stands for one template. For each, against the account's contents (``GET
/v1/ContentAndApprovals``):

- missing: created (``POST /v1/Content``, ``friendly_name`` = the template's name, its text and
  buttons, a sample per variable) and submitted (``POST …/ApprovalRequests/whatsapp`` with its
  name and category);
- present with the same text: submitted if it never was, else left as it is;
- present with other text: reported (an approved template cannot be edited); ``--replace``
  deletes it and creates the new one, which then needs approval again.

Templates WhatsApp would reject (the response check's ``template-…`` problems) are reported and
not sent. ``--check`` changes nothing and exits 1 when something would change. Each template's
state is printed: approved, pending, rejected (with WhatsApp's reason). The sender picks up
approvals within ``CATALOG_TTL_SECONDS`` (5 minutes). Credentials come from the environment
(``.env`` under ``make``); ``TWILIO_API_BASE_URL`` points it at the local fake.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from devtools.responses import ROOT, load_responses
from omnichannel.errors import ConfigError
from omnichannel.settings import Settings
from omnichannel.twilio_content import ContentApi, ContentApiError, approval_status
from omnichannel.whatsapp_templates import TemplateDeclaration, declarations, template_problems
from testkit.local_env import read_env_file


def _same(content: Mapping[str, Any], declaration: TemplateDeclaration) -> bool:
    return (content.get("types") or {}) == declaration.types() and str(
        content.get("language") or "en"
    ) == declaration.language


async def sync(
    api: ContentApi,
    wanted: Sequence[TemplateDeclaration],
    *,
    check_only: bool = False,
    replace: bool = False,
    out: Any = sys.stdout,
) -> int:
    """Brings the account's templates in line with ``wanted``; returns the exit status (1 when
    a template could not be synced, or, with ``check_only``, when one would change)."""
    failed = False
    changes = 0
    existing: Dict[str, List[Mapping[str, Any]]] = {}
    for content in await api.contents_and_approvals():
        existing.setdefault(str(content.get("friendly_name")), []).append(content)
    for declaration in wanted:
        problems = template_problems(declaration)
        if problems:
            failed = True
            for code, detail in problems:
                print(f"{declaration.name} ({declaration.response}): {code}: {detail}", file=out)
            continue
        found = existing.get(declaration.name) or []
        current = next((c for c in found if _same(c, declaration)), None)
        stale = [c for c in found if c is not current]
        if stale and not replace:
            print(
                f"{declaration.name}: its text at Twilio differs from domain.yml "
                "(an approved template cannot change): run with --replace to create it anew",
                file=out,
            )
            failed = True
            continue
        status = approval_status(current) if current else None
        if check_only:
            if current is None or status is None or stale:
                changes += 1
                print(
                    f"{declaration.name}: would be {'created' if not current else 'submitted'}",
                    file=out,
                )
            else:
                print(f"{declaration.name}: {status}", file=out)
            continue
        for old in stale:
            await api.delete(str(old["sid"]))
            print(f"{declaration.name}: old text {old['sid']} deleted", file=out)
        sid = str(current["sid"]) if current else None
        if sid is None:
            created = await api.create(
                declaration.name,
                declaration.types(),
                declaration.language,
                declaration.sample_variables() or None,
            )
            sid = str(created["sid"])
            print(f"{declaration.name}: created {sid} ({declaration.content_type})", file=out)
        approval: Optional[Mapping[str, Any]] = (
            current.get("approval_requests") if current else None
        )
        if status is None:
            approval = await api.request_approval(sid, declaration.name, declaration.category)
            status = str(approval.get("status"))
            print(f"{declaration.name}: submitted for approval as {declaration.category}", file=out)
        reason = (approval or {}).get("rejection_reason")
        print(f"{declaration.name}: {status}{f' ({reason})' if reason else ''} {sid}", file=out)
        if status == "rejected":
            failed = True
    if check_only and changes:
        return 1
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.whatsapp_templates", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--domain", type=Path, default=ROOT / "domain.yml")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on drift")
    parser.add_argument(
        "--replace", action="store_true", help="delete templates whose text changed, recreate"
    )
    arguments = parser.parse_args(argv)
    wanted = declarations(load_responses(arguments.domain))
    if not wanted:
        print("no response declares a whatsapp_template")
        return 0
    try:
        # Under make, the local secrets (.env), each overridden by the environment.
        api = ContentApi(Settings.from_env({**read_env_file(), **os.environ}))
        return asyncio.run(sync(api, wanted, check_only=arguments.check, replace=arguments.replace))
    except (ContentApiError, ConfigError) as error:
        print(f"Twilio's Content API: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
