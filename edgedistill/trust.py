"""Whether code shipped with a model may run: never, unless the recipe sets ``trust.remote_code: true``.

The runner records the recipe's choice in an environment variable, so every process it starts (teacher
labelling, torchrun training, the PyTorch bench) loads models the same way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

REMOTE_CODE_ENV = "EDGEDISTILL_TRUST_REMOTE_CODE"


def allow_remote_code(allowed: bool) -> None:
    """Set, for this process and the ones it starts, whether model code may run."""
    if allowed:
        os.environ[REMOTE_CODE_ENV] = "1"
    else:
        os.environ.pop(REMOTE_CODE_ENV, None)


def remote_code_allowed() -> bool:
    return os.environ.get(REMOTE_CODE_ENV) == "1"


def load_sentence_transformer(path: str | Path, device: str) -> SentenceTransformer:
    """A sentence-transformers model from a folder, running its shipped code only when the recipe allows it."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, trust_remote_code=remote_code_allowed())
