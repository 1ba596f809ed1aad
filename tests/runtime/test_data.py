"""Input files: formats, column detection, labels, and file:line errors."""

from __future__ import annotations

import io
import sys

import pytest

from edge_slm.runtime.data import label_ids, read_dataset
from edge_slm.common.errors import EdgeError
from edge_slm.runtime.metrics import classification_report


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_plain_lines_skip_blank_lines(tmp_path):
    ds = read_dataset(write(tmp_path, "in.txt", "good movie\n\n  \nbad movie\n"))
    assert ds.texts == ["good movie", "bad movie"] and ds.labels is None and ds.line_numbers == [1, 4]


def test_sst2_style_tsv_with_header(tmp_path):
    ds = read_dataset(write(tmp_path, "d.tsv", 'text\tlabel\nit \'s "fine" . \t1\nawful \t0\n'))
    assert ds.texts == ['it \'s "fine" . ', "awful "] and ds.labels == ["1", "0"]
    assert ds.label_names == ["0", "1"]


def test_headerless_tsv_takes_last_column_as_label(tmp_path):
    ds = read_dataset(write(tmp_path, "d.tsv", "great\tpositive\npoor\tnegative\n"))
    assert ds.labels == ["positive", "negative"]


def test_csv_with_quotes_and_named_columns(tmp_path):
    text = 'id,review,sentiment\n1,"good, really good",pos\n2,"bad",neg\n'
    ds = read_dataset(write(tmp_path, "d.csv", text), text_column="review", label_column="sentiment")
    assert ds.texts == ["good, really good", "bad"] and ds.labels == ["pos", "neg"]


def test_jsonl_with_int_and_string_labels(tmp_path):
    ds = read_dataset(write(tmp_path, "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "0"}\n'))
    assert ds.texts == ["a", "b"] and ds.labels == ["1", "0"]


def test_override_columns_by_index(tmp_path):
    ds = read_dataset(write(tmp_path, "d.tsv", "x\tgood\t1\ny\tbad\t0\n"), text_column=1, label_column=2)
    assert ds.texts == ["good", "bad"] and ds.labels == ["1", "0"]


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"text\tlabel\nfine\t1\n")))
    ds = read_dataset("-")
    assert ds.source == "<stdin>" and ds.texts == ["fine"] and ds.format == "tsv"


@pytest.mark.parametrize("name, content, where", [
    ("d.tsv", "text\tlabel\ngood\t1\nbad\t0\textra\n", "d.tsv:3"),
    ("d.tsv", "text\tlabel\ngood\t1\n\t0\n", "d.tsv:3"),
    ("d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": [1]}\n', "d.jsonl:2"),
    ("d.jsonl", '{"text": "a", "label": 1}\nnot json\n', "d.jsonl:2"),
    ("d.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', "d.jsonl:2"),
])
def test_bad_rows_name_file_and_line(tmp_path, name, content, where):
    with pytest.raises(EdgeError, match=where):
        read_dataset(write(tmp_path, name, content))


def test_non_utf8_names_the_line(tmp_path):
    with pytest.raises(EdgeError, match=r"in.txt:2 is not UTF-8"):
        read_dataset(write(tmp_path, "in.txt", b"fine\ncaf\xe9 latte\n"))


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(EdgeError, match="holds no text"):
        read_dataset(write(tmp_path, "in.txt", "\n\n"))


def test_labels_map_by_name_or_index():
    from edge_slm.runtime.data import Dataset

    ds = Dataset(source="s", texts=["a", "b", "c"], labels=["Positive", "0", "negative"], line_numbers=[1, 2, 3])
    assert label_ids(ds, ["negative", "positive"]) == [1, 0, 0]
    bad = Dataset(source="s", texts=["a"], labels=["neutral"], line_numbers=[5])
    with pytest.raises(EdgeError, match="s:5"):
        label_ids(bad, ["negative", "positive"])


def test_classification_report_many_classes():
    report = classification_report([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(0.8)
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 2]]
    # F1: a = 1, b = 2/3, c = 0.8
    assert report["macro_f1"] == pytest.approx((1 + 2 / 3 + 0.8) / 3)
    assert report["per_class"]["b"] == {"support": 2, "predicted": 1, "correct": 1,
                                        "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}


def test_text_fingerprints_are_the_sha256_of_the_normalized_text():
    """Artifacts made before the runtime hashed with CPython's builtin SHA-256 carry hashlib's digests."""
    import hashlib

    from edge_slm.runtime.data import FINGERPRINT_HEX, text_fingerprint

    assert text_fingerprint("A  Fine\tfilm. ") == hashlib.sha256(b"a fine film.").hexdigest()[:FINGERPRINT_HEX]
    assert text_fingerprint("é") == hashlib.sha256("é".encode()).hexdigest()[:FINGERPRINT_HEX]
