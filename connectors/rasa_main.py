"""The Rasa server's entry point: ``python -m connectors.rasa_main run ...`` is ``rasa run ...``
with :mod:`connectors.rasa_light_start` installed first, so a model without TensorFlow
components is served without importing TensorFlow (a third of the memory, ready seconds
sooner). Any other ``rasa`` command works too, unchanged but for the lighter start.
"""

from __future__ import annotations

import sys

from connectors import rasa_light_start


def main() -> None:
    rasa_light_start.install()
    from rasa.__main__ import main as rasa_main

    sys.argv[0] = "rasa"
    rasa_main()


if __name__ == "__main__":
    main()
