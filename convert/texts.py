"""Texts for calibration and validation: the user's file, or sentences generated from the vocab."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_slm.common.errors import EdgeError
from edge_slm.runtime.data import read_dataset

DEFAULT_VALIDATION_SAMPLES = 100
# Calibration runs TF's reference kernels with every tensor logged: ~0.6 s a text for MobileBERT
# or DistilBERT at 128 tokens, so it dominates int8 conversion time; min/max ranges settle fast.
DEFAULT_CALIBRATION_SAMPLES = 50
GENERATED_SEED = 1234


@dataclass
class Texts:
    texts: list
    source: str        # the file, or "generated"

    def describe(self) -> dict:
        return {"source": self.source, "count": len(self.texts)}

    def first(self, count: int) -> "Texts":
        """The first `count` texts (0 = all)."""
        return Texts(self.texts[:count] if count else list(self.texts), self.source)


def read_text_file(path: str, flag: str = "--calibration") -> Texts:
    try:
        dataset = read_dataset(path, flag=flag)
    except EdgeError as e:
        raise EdgeError(f"{flag}: {e.message}", e.hint) from None
    return Texts(dataset.texts, str(path))


def generated_texts(vocab: list, count: int, seq_len: int, seed: int = GENERATED_SEED) -> list:
    """Deterministic pseudo-sentences of whole-word vocab entries; some longer than seq_len, so
    that truncation is exercised too."""
    words = [t for t in vocab if t.isascii() and t.isalpha() and len(t) > 1]
    if not words:
        raise EdgeError("the vocabulary has no whole words to generate texts from",
                        "pass --calibration FILE with real texts")
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        length = int(rng.integers(2, max(3, seq_len + 8)))
        chosen = rng.choice(len(words), size=length)
        text = " ".join(words[i] for i in chosen)
        texts.append(text[0].upper() + text[1:] + rng.choice([".", "!", "?", " ..."]))
    return texts
