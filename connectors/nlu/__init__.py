"""Rasa NLU plug-ins (GraphComponents named in config.yml): the customer-text tokenizer, the
spelling corrector and the confirmation gate. Each is a thin shell over its logic in
``omnichannel.nlu``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType


def source_fingerprint(*modules: ModuleType) -> str:
    """A digest of the modules' source, for a component's ``fingerprint_addon``: Rasa reuses a
    cached component output while the component's config is unchanged, so a change to the
    logic it runs must change its fingerprint too."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()
