"""Training data: labelled files read with the device's reader, class names, seeded subsets."""

from __future__ import annotations

import hashlib
import re
from typing import Optional

import numpy as np

from edge_slm.common.errors import EdgeError
from edge_slm.convert.source import ModelSource, read_vocab
from edge_slm.convert.texts import generated_texts
from edge_slm.runtime.data import Dataset, read_dataset

# Draws of the seed's random streams: one for the training subset, one per epoch for the order.
SUBSET_STREAM = 1_000_003
DECIMAL = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
INTEGER = re.compile(r"^[+-]?\d+$")


def read_labelled(path, option: str, text_column, label_column):
    if path is None:
        raise EdgeError(f"{option} FILE is required", f"pass {option} with a TSV/CSV/JSONL file of texts and labels")
    try:
        dataset = read_dataset(path, text_column, label_column, require_labels=True, flag=option)
    except EdgeError as e:
        raise EdgeError(f"{option}: {e.message}", e.hint) from None
    check_label_values(dataset, option)
    return dataset


def check_label_values(dataset, option: str) -> None:
    """Classes are ints or names; real numbers are regression targets, which this does not train."""
    if all(DECIMAL.match(label) for label in dataset.labels):
        fractional = next((i for i, label in enumerate(dataset.labels) if not INTEGER.match(label)), None)
        if fractional is not None:
            raise EdgeError(f"{option}: {dataset.where(fractional)}: label {dataset.labels[fractional]!r} is a "
                            "number but not an integer (a regression target?)",
                            "edge-train trains classifiers: labels must be class ids (0, 1, …) or names")


def subset(dataset, max_examples: Optional[int], seed: int):
    """A seeded random subset (kept in file order), so that a file sorted by label still gives every class."""
    if max_examples is None or max_examples >= len(dataset.texts):
        return dataset
    keep = np.sort(np.random.default_rng([seed, SUBSET_STREAM]).choice(len(dataset.texts), max_examples,
                                                                         replace=False))
    return Dataset(source=dataset.source, texts=[dataset.texts[i] for i in keep],
                   labels=[dataset.labels[i] for i in keep],
                   line_numbers=[dataset.line_numbers[i] for i in keep], format=dataset.format)


def label_sort_key(labels):
    return (lambda x: int(x)) if all(INTEGER.match(x) for x in labels) else (lambda x: x)


def label_names(train_set, dev_set, source_labels: Optional[list]) -> list:
    """The classes, in output order: the checkpoint's own order when it has the same classes, else the
    training labels sorted (numerically for ints)."""
    names = train_set.label_names
    if len(names) < 2:
        raise EdgeError(f"--train: every example of {train_set.source} is labelled {names[0]!r}; a classifier "
                        "needs at least two classes", "check the label column (--label-column), or use more "
                        "examples (--max-train-examples)")
    folded = {}
    for name in names:  # edge-run matches labels case-insensitively
        if name.lower() in folded:
            raise EdgeError(f"--train: labels {folded[name.lower()]!r} and {name!r} differ only in case",
                            "spell each class one way")
        folded[name.lower()] = name
    known = set(names)
    for i, label in enumerate(dev_set.labels):
        if label not in known:
            raise EdgeError(f"--dev: {dev_set.where(i)}: label {label!r} does not occur in the training data "
                            f"(classes: {', '.join(names)})", "dev labels must be training labels, spelled the same")
    if source_labels and set(source_labels) == known:
        return list(source_labels)
    return list(names)


def generated_examples(src: ModelSource, count: int, seq_len: int) -> tuple:
    vocab, origin = read_vocab(src.directory)
    texts = generated_texts(vocab, count, seq_len)
    return texts, [str(i % 2) for i in range(count)], origin


def data_fingerprint(dataset) -> str:
    digest = hashlib.sha256()
    for text, label in zip(dataset.texts, dataset.labels):
        digest.update(f"{label}\t{text}\n".encode("utf-8"))
    return digest.hexdigest()


def label_counts(raw_labels: list, labels: list) -> dict:
    counts = {name: 0 for name in labels}
    for label in raw_labels:
        counts[label] += 1
    return counts
