import asyncio
import gc

from connectors.ops import heap


def test_the_heap_is_frozen_once_the_model_is_loaded(monkeypatch):
    monkeypatch.setattr(heap, "POLL_SECONDS", 0.01)
    checks = []

    def loaded() -> bool:
        checks.append(gc.get_freeze_count())
        return len(checks) >= 3

    gc.unfreeze()
    try:
        frozen = asyncio.run(heap.freeze_when_loaded(loaded))
        # Nothing frozen while the model loaded; then everything alive.
        assert checks == [0, 0, 0]
        assert frozen > 10_000 and gc.get_freeze_count() > 10_000
        # A full collection no longer walks the frozen objects.
        assert len(gc.get_objects(2)) < frozen
    finally:
        gc.unfreeze()
