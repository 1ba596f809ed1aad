"""Classification metrics for evaluation: accuracy, macro-F1, per-class counts, confusion."""

from __future__ import annotations

from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY, accuracy_withheld

from .data import calibrated_on, label_ids


def classification_report(true_ids: list, predicted_ids: list, label_names: list) -> dict:
    """Metrics over `label_names` classes; confusion[t][p] counts true t predicted p."""
    if len(true_ids) != len(predicted_ids):
        raise ValueError("true and predicted lengths differ")
    n = len(label_names)
    confusion = [[0] * n for _ in range(n)]
    for t, p in zip(true_ids, predicted_ids):
        confusion[t][p] += 1
    per_class = {}
    f1s = []
    for k, name in enumerate(label_names):
        tp = confusion[k][k]
        support = sum(confusion[k])
        predicted = sum(row[k] for row in confusion)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[str(name)] = {"support": support, "predicted": predicted, "correct": tp,
                                "precision": precision, "recall": recall, "f1": f1}
        if support or predicted:  # classes absent from both sides do not drag macro-F1 down
            f1s.append(f1)
    total = len(true_ids)
    correct = sum(confusion[k][k] for k in range(n))
    return {
        "examples": total,
        "correct": correct,
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "labels": [str(x) for x in label_names],
        "per_class": per_class,
        "confusion_matrix": confusion,
    }


def evaluate(model, dataset, predictions: list) -> dict:
    """Accuracy of `predictions` (dicts with "index") against the dataset's labels. `model` names the
    labels and says whether its weights are random (the device's Model, or the TF baseline)."""
    true_ids = label_ids(dataset, model.labels)
    predicted = [p["index"] for p in predictions]
    report = classification_report(true_ids, predicted, model.labels)
    if accuracy_withheld(model.random_weights):
        # Agreement with labels from random weights is noise; never present it as accuracy.
        return {"status": RANDOM_WEIGHTS_ACCURACY, "examples": report["examples"],
                "predicted_counts": {k: v["predicted"] for k, v in report["per_class"].items()}}
    report["status"] = "ok" if model.random_weights is False else "unknown weights (plain .tflite)"
    # Texts the artifact was calibrated on make its accuracy partly in-sample: say how many.
    # (A TF baseline runner has no metadata: the source model was never calibrated.)
    report["calibrated_on_texts"] = calibrated_on(getattr(model, "metadata", None), dataset.texts)
    return report
