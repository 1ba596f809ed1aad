"""Texts for calibration and validation: the user's file, or sentences generated from the vocab."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edge_slm.common.errors import EdgeError
from edge_slm.runtime.data import overlapping_texts, read_dataset, text_fingerprint

DEFAULT_VALIDATION_SAMPLES = 100
# Calibration runs TF's reference kernels with every tensor logged: ~0.6 s a text for MobileBERT
# or DistilBERT at 128 tokens, so it dominates int8 conversion time; min/max ranges settle fast.
DEFAULT_CALIBRATION_SAMPLES = 50
GENERATED_SEED = 1234


@dataclass
class Texts:
    texts: list
    source: str        # the file, or "generated"
    start: int = 0     # index of the first text in its source

    def describe(self) -> dict:
        return {"source": self.source, "count": len(self.texts),
                "rows": [self.start, self.start + len(self.texts)]}  # 0-based, end excluded

    def take(self, start: int, count: Optional[int]) -> "Texts":
        """`count` texts from `start` (None = to the end)."""
        stop = None if count is None else start + count
        return Texts(self.texts[start:stop], self.source, self.start + start)


def read_text_file(path: str, flag: str = "--calibration") -> Texts:
    try:
        dataset = read_dataset(path, flag=flag)
    except EdgeError as e:
        raise EdgeError(f"{flag}: {e.message}", e.hint) from None
    return Texts(dataset.texts, str(path))


def split_pool(pool: Texts, validation_samples: int, calibration_samples: int) -> tuple:
    """(validation texts, calibration texts) as disjoint slices of one pool: the validation texts
    first, the calibration texts after them, so that int8's agreement gate is not measured on the
    texts it was calibrated on. validation_samples 0 = every text the calibration does not take;
    calibration_samples 0 = no calibration (no integer mode)."""
    size = len(pool.texts)
    validation_count = validation_samples or size - calibration_samples
    if validation_count < 1 or (calibration_samples and validation_count >= size):
        raise EdgeError(f"--calibration {pool.source} has {size} texts: too few for "
                        f"{validation_samples or 'all but the'} validation texts and {calibration_samples} "
                        "calibration texts that do not overlap",
                        "pass a larger file, fewer --validation-samples or --calibration-samples, or the "
                        "validation texts as --data FILE")
    return pool.take(0, validation_count), pool.take(validation_count, calibration_samples)


def calibration_overlap(validation: Texts, calibration: Optional[Texts]) -> int:
    """How many validation texts are also calibration texts (case and whitespace ignored)."""
    if calibration is None:
        return 0
    return overlapping_texts([text_fingerprint(t) for t in calibration.texts], validation.texts)


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
