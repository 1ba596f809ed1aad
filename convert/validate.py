"""Validation: the artifact through the device runtime vs the source TF model, on the same texts.

Thresholds (label agreement, per mode, see graph.QUANT_MODES): fp32 0.99, fp16 0.98, dynamic
0.95, int16x8 0.95, int8 0.90. They are enforced for trained weights; for random weights only the
float modes (fp32, fp16) are held to them, unless the user sets --min-agreement.

The reference side is what a workstation user would run: Hugging Face's tokenizer + the TF model.
The device side is `edge_slm.runtime`: its own tokenizer + the TFLite interpreter, exactly as on
the device. So a conversion error and a device-tokenizer mismatch both show up here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .architectures import ArchitectureSpec

REFERENCE_BATCH = 32


@dataclass
class Reference:
    """The source model's logits and HF's token ids for the validation texts."""
    texts: list
    token_ids: list            # HF's ids per text, without padding
    logits: np.ndarray         # (n, num_labels) float32
    padded: bool = True        # False: each text ran at its own length


def hf_tokenizer(vocab_path: str, settings: dict):
    from transformers import BertTokenizerFast  # deferred: transformers loads TensorFlow

    return BertTokenizerFast(vocab_file=vocab_path, do_lower_case=settings["lowercase"],
                             strip_accents=settings["strip_accents"],
                             tokenize_chinese_chars=settings["tokenize_chinese_chars"],
                             **{k: settings[k] for k in ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token")})


def encode(tokenizer, texts: list, seq_len: int, padded: bool = True) -> dict:
    """int32 (n, seq_len) input_ids/attention_mask/token_type_ids, padded and truncated like the device;
    padded=False: (n, the texts' own length), for texts of one length (or a single text)."""
    batch = tokenizer(list(texts), padding="max_length" if padded else "longest", truncation=True,
                      max_length=seq_len, return_tensors="np", return_token_type_ids=True,
                      return_attention_mask=True)
    return {name: np.asarray(batch[name], dtype=np.int32) for name in ("input_ids", "attention_mask", "token_type_ids")}


def reference(model, tokenizer, texts: list, seq_len: int, spec: ArchitectureSpec, padded: bool = True) -> Reference:
    """The TF model's logits: on every text padded to seq_len (what a fixed-length graph computes), or
    (padded=False) on each text's own tokens, as a length-aware graph runs it. Unpadded, texts of one
    length share a batch; MobileBERT's logits differ between the two (README: "Length-aware artifacts")."""
    encoded = encode(tokenizer, texts, seq_len)
    lengths = encoded["attention_mask"].sum(axis=1)
    token_ids = [row[:n].tolist() for row, n in zip(encoded["input_ids"], lengths)]
    logits = np.zeros((len(texts), model.config.num_labels), np.float32)
    groups = [np.arange(len(texts))] if padded else [np.flatnonzero(lengths == n) for n in np.unique(lengths)]
    for group in groups:
        for start in range(0, len(group), REFERENCE_BATCH):
            rows = group[start:start + REFERENCE_BATCH]
            width = seq_len if padded else int(lengths[rows[0]])
            chunk = {name: encoded[name][rows, :width] for name in spec.inputs}
            logits[rows] = np.asarray(model(chunk, training=False).logits, dtype=np.float32)
    return Reference(list(texts), token_ids, logits, padded)


RANDOM_WEIGHTS_NOTE = ("random weights: their logits are near ties, so quantization noise flips labels "
                       "without saying anything about the conversion; agreement is reported, not enforced")


# A flip is excused only while the artifact's typical noise is small against the reference's own
# logit spread: a broken artifact (noise as large as the logits) excuses nothing.
NOISE_TO_SPREAD_LIMIT = 0.1


def margin_aware(reference: np.ndarray, device: np.ndarray) -> dict:
    """Label agreement that does not count near-ties as failures.

    The artifact's quantization noise is measured on these texts: the median over texts of the
    largest |logit difference|. A text whose labels differ is excused when the reference's two logits
    (its label's and the artifact's label's) are closer than twice that noise: each may move by the
    noise in opposite directions, so that flip says nothing about the artifact. Nothing is excused
    when the noise exceeds NOISE_TO_SPREAD_LIMIT of the reference logits' median spread (max - min).
    """
    ref_labels, device_labels = reference.argmax(axis=1), device.argmax(axis=1)
    rows = np.arange(len(reference))
    noise = float(np.median(np.abs(device - reference).max(axis=1)))
    spread = float(np.median(reference.max(axis=1) - reference.min(axis=1)))
    margins = reference[rows, ref_labels] - reference[rows, device_labels]
    flips = ref_labels != device_labels
    applies = spread > 0 and noise <= NOISE_TO_SPREAD_LIMIT * spread
    excused = flips & (margins < 2 * noise) if applies else np.zeros_like(flips)
    return {"margin_aware_agreement": float(np.mean(~flips | excused)), "quantization_noise": noise,
            "reference_logit_spread": spread, "excused_flips": int(excused.sum()), "flips": int(flips.sum()),
            "margin_rule": "a flip is excused when the reference logits of the two labels are closer than twice "
                           "the noise (median over texts of max |logit difference|), unless the noise exceeds "
                           f"{NOISE_TO_SPREAD_LIMIT:g} of the median reference logit spread"}


def compare(ref: Reference, device_model, min_agreement: float, enforced: bool = True) -> dict:
    """Metrics of the device's logits against the reference, and whether they pass: the gate is the
    margin-aware agreement (the raw label agreement is reported beside it)."""
    device = device_model.logits(ref.texts).astype(np.float32)
    delta = np.abs(device - ref.logits)
    norms = np.linalg.norm(device, axis=1) * np.linalg.norm(ref.logits, axis=1)
    cosine = np.sum(device * ref.logits, axis=1) / np.maximum(norms, 1e-30)
    agreement = float(np.mean(np.argmax(device, axis=1) == np.argmax(ref.logits, axis=1)))
    margins = margin_aware(ref.logits, device)
    seq_len = device_model.seq_len
    token_mismatches = sum(device_model.tokenizer.encode_ids(text, seq_len) != ids
                           for text, ids in zip(ref.texts, ref.token_ids))
    return {
        "texts": len(ref.texts),
        "lengths": f"padded to {device_model.seq_len}" if ref.padded else "each text's own",
        "max_abs_logit_diff": float(delta.max()),
        "mean_abs_logit_diff": float(delta.mean()),
        "mean_cosine": float(cosine.mean()),
        "label_agreement": agreement,
        **margins,
        "min_agreement": min_agreement,
        "enforced": enforced,
        "passed": margins["margin_aware_agreement"] >= min_agreement or not enforced,
        "token_id_mismatches": int(token_mismatches),
        **({} if enforced else {"note": RANDOM_WEIGHTS_NOTE}),
    }
