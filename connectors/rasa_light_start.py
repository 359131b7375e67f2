"""A Rasa 3.6.21 server without TensorFlow when no component of the model needs it.

``rasa run`` imports TensorFlow (530 MB resident, 3-4 s of CPU) whatever the model holds: by
three routes, none of which a model of sparse featurisers, logistic regression, memoization
and rules uses:

- **Rasa's own imports.** The policies' featurisers import the entity extractor module, which
  imports ``rasa.utils.train_utils``, which imports TensorFlow's Keras callbacks at its top;
  nothing calls into it unless a TensorFlow component trains or runs. :func:`install` makes
  that one module load lazily (``importlib.util.LazyLoader``): it runs, TensorFlow with it, the
  first time anything reads a name of it.
- **The training graph.** Loading a model rebuilds both of its graphs, the one that predicts
  and the one that trained it, and rebuilding a graph imports the class of every node: the
  training graph's recipe validator imports DIET, TED and the other TensorFlow components
  to check configurations against. Serving never reads the training graph; it is now rebuilt
  the first time something does (:class:`DeferredGraphSchema`), with the same nodes.
- **skops.io's scan.** The logistic regression loads through skops.io, whose import looks up
  the module of every numpy and scipy function among all loaded modules and reads their
  attributes (skops 0.9, ``skops/io/_utils.py``): that would run the lazy module, and with
  Rasa loaded it is thousands of modules. :func:`install` imports skops.io first, which finds
  the same modules (tests/connectors/test_rasa_light_start.py compares the trusted types).

A model that does need TensorFlow still gets it: loading its predict graph imports DIET or TED,
which import TensorFlow as usual. The risk is a first use of ``rasa.utils.train_utils`` in the
middle of serving (a component of a later Rasa, a custom one): that turn then waits for
TensorFlow to import (seconds), and the process grows by it; nothing fails. The tests check
that a served turn of this project's model never imports it, and that a TensorFlow pipeline's
components still load.

It must run before Rasa is imported, so it is Rasa's command line behind our own entry point
(:mod:`connectors.rasa_main`); the version check reads the installed distribution's metadata
rather than importing Rasa.
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import sys
from types import ModuleType
from typing import Any, Dict, Optional, Sequence

#: The Rasa version whose imports this was written against.
RASA_VERSION = "3.6.21"
#: Rasa modules that import TensorFlow at their top and that serving a model without
#: TensorFlow components imports but never uses.
LAZY_MODULES = frozenset({"rasa.utils.train_utils"})


class LazyRasaModules(importlib.abc.MetaPathFinder):
    """Finds :data:`LAZY_MODULES` as the other finders do, with a lazy loader."""

    def find_spec(
        self,
        fullname: str,
        path: Optional[Sequence[str]],
        target: Optional[ModuleType] = None,
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in LAZY_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


def _deferred_graph_schema_class() -> Any:
    from rasa.engine.graph import GraphSchema

    class DeferredGraphSchema(GraphSchema):
        """A graph schema rebuilt (its node classes imported) the first time it is read."""

        def __init__(self, serialized: Dict[str, Any]) -> None:  # noqa: D107
            self._serialized = copy.deepcopy(serialized)
            self._nodes: Optional[Dict[str, Any]] = None

        @property
        def nodes(self) -> Dict[str, Any]:
            if self._nodes is None:
                # from_dict writes the imported classes into what it reads: give it a copy.
                self._nodes = GraphSchema.from_dict(copy.deepcopy(self._serialized)).nodes
            return self._nodes

        @nodes.setter
        def nodes(self, nodes: Dict[str, Any]) -> None:
            self._nodes = nodes

        @property
        def resolved(self) -> bool:
            return self._nodes is not None

    return DeferredGraphSchema


def _defer_training_graph() -> None:
    from rasa.engine.storage.storage import ModelMetadata

    original = ModelMetadata.from_dict.__func__  # type: ignore[attr-defined]
    if getattr(original, "_omni_deferred", False):
        return
    deferred_schema = _deferred_graph_schema_class()

    def from_dict(cls: type, serialized: Dict[str, Any]) -> Any:
        train_schema = serialized["train_schema"]
        metadata = original(cls, {**serialized, "train_schema": {"nodes": {}}})
        metadata.train_schema = deferred_schema(train_schema)
        return metadata

    from_dict._omni_deferred = True  # type: ignore[attr-defined]
    ModelMetadata.from_dict = classmethod(from_dict)  # type: ignore[method-assign,assignment]


def install() -> None:
    """Installs the lazy imports (idempotent). Must run before Rasa is imported; raises
    RuntimeError on another Rasa version or when Rasa's modules are already loaded."""
    found = importlib.metadata.version("rasa")
    if found != RASA_VERSION:
        raise RuntimeError(
            f"connectors/rasa_light_start.py targets Rasa {RASA_VERSION}, found {found}: "
            "re-read Rasa's imports in the new version, or start the server with `rasa run`"
        )
    if not any(isinstance(finder, LazyRasaModules) for finder in sys.meta_path):
        loaded = sorted(LAZY_MODULES & set(sys.modules))
        if loaded:
            raise RuntimeError(f"install() must run before Rasa is imported ({loaded[0]} is)")
        import skops.io  # noqa: F401 - before Rasa (docstring)

        sys.meta_path.insert(0, LazyRasaModules())
    _defer_training_graph()
