"""Train the Rasa model only when its inputs changed.

The model's file name is a hash of everything training reads (config, domain, data), so
`make run`, `make test` and parallel test runs share one model per version of the data and never
train the same thing twice. A file lock keeps two processes from training at once.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import subprocess
import sys
import time
from pathlib import Path

#: The project root (the image of deploy/rasa.Dockerfile copies only devtools/ of the tooling).
ROOT = Path(__file__).resolve().parent.parent
#: What training reads: the assistant's files and the code of its NLU plug-ins (a change to how
#: customer text is normalised changes the model).
TRAINING_INPUTS = ("config.yml", "domain.yml", "data", "omnichannel/nlu", "connectors/nlu")
MODELS_DIR = ROOT / "models"


def training_fingerprint(root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for name in TRAINING_INPUTS:
        path = root / name
        files = (
            sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            if path.is_dir()
            else [path]
        )
        for file in files:
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def ensure_model(quiet: bool = False) -> Path:
    """Path of the trained model for the current data, training it first if needed."""
    MODELS_DIR.mkdir(exist_ok=True)
    name = f"omni-{training_fingerprint()}"
    model = MODELS_DIR / f"{name}.tar.gz"
    with open(MODELS_DIR / ".train.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if model.exists():
            return model
        started = time.monotonic()
        print(f"Training the Rasa model ({name}); data changed since the last model…", flush=True)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "rasa",
                "train",
                "--fixed-model-name",
                name,
                "--out",
                str(MODELS_DIR),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.STDOUT if quiet else None,
        )
        if result.returncode != 0 or not model.exists():
            raise SystemExit(f"rasa train failed (exit {result.returncode})")
        print(f"Trained {model.name} in {time.monotonic() - started:.0f} s", flush=True)
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quiet", action="store_true", help="hide rasa train's output")
    args = parser.parse_args()
    print(ensure_model(quiet=args.quiet))
