"""The converter end to end on tiny configs (2 layers, hidden 32, seq 16) of every architecture."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("transformers")

from tests.conftest import TINY_SEQ_LEN, write_tiny_checkpoint

from edge_slm.convert.api import ValidationFailed, convert
from edge_slm.convert.graph import QUANT_MODES
from edge_slm.runtime.artifact import read_artifact
from edge_slm.runtime.engine import load_model
from edge_slm.common.errors import EXIT_VALIDATION_FAILED, EdgeError

ARCHITECTURES = ("bert", "distilbert", "mobilebert", "electra")
TEXTS = ["a charming and often affecting journey .", "unflinchingly bleak and desperate",
         "Ünïcödé and CJK 中文 text, with [MASK] and punctuation!!", "x " * 40]


def tiny_checkpoint(directory: Path, minilm_dir: Path, model_type: str) -> Path:
    if model_type != "electra":
        return write_tiny_checkpoint(directory, minilm_dir, model_type)
    path = write_tiny_checkpoint(directory, minilm_dir, "bert")
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="electra", embedding_size=16)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, minilm_dir):
    """{architecture: {quant: ConversionResult}} for random-init tiny checkpoints."""
    out = tmp_path_factory.mktemp("tiny-out")
    results = {}
    for model_type in ARCHITECTURES:
        checkpoint = tiny_checkpoint(tmp_path_factory.mktemp(model_type) / f"tiny-{model_type}", minilm_dir,
                                     model_type)
        modes = ["fp32", "dynamic", "int8"] + (["fp16"] if model_type == "bert" else [])
        results[model_type] = {r.quant: r for r in convert(str(checkpoint), modes, TINY_SEQ_LEN, out,
                                                           random_init=True)}
    return results


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_artifacts_carry_the_graph_contract(converted, model_type):
    for quant, result in converted[model_type].items():
        artifact = read_artifact(result.artifact_path)
        meta = artifact.metadata
        expected_inputs = ["input_ids", "attention_mask"] + ([] if model_type == "distilbert" else ["token_type_ids"])
        assert [i["role"] for i in meta["inputs"]] == expected_inputs
        model = load_model(result.artifact_path)
        graph_inputs = model.interpreter.get_input_details()
        assert [d["name"] for d in graph_inputs] == [i["name"] for i in meta["inputs"]]
        # Length-aware (the default): any length up to max_seq_len; tests/convert/test_lengths.py has more.
        assert all(list(d["shape_signature"]) == [1, -1] and d["dtype"] == np.int32 for d in graph_inputs)
        assert meta["sequence"] == {"kind": "dynamic", "max_len": TINY_SEQ_LEN}
        output = model.interpreter.get_output_details()
        assert len(output) == 1 and list(output[0]["shape"]) == [1, 2] and output[0]["dtype"] == np.float32
        assert meta["quantization"] == quant
        assert meta["random_weights"] is True and meta["weights"]["origin"] == "random"
        assert meta["labels"] == ["negative", "positive"]
        assert meta["tokenizer"]["max_seq_len"] == TINY_SEQ_LEN and meta["tokenizer"]["lowercase"] is True
        assert meta["model"]["model_type"] == model_type and meta["model"]["num_layers"] == 2
        assert set(meta["tools"]) == {"tensorflow", "transformers", "edge_slm"}
        assert meta["created"].endswith("+00:00")
        assert len(artifact.vocab) == 30522
        assert model.logits(TEXTS).shape == (len(TEXTS), 2)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_validation_is_recorded_and_the_float_graph_matches_tf(converted, model_type):
    for quant, result in converted[model_type].items():
        report = json.loads(Path(result.report_path).read_text())
        meta = read_artifact(result.artifact_path).metadata
        assert meta["validation"] == report["validation"] == result.validation
        v = result.validation
        assert v["texts"] == 100 and v["token_id_mismatches"] == 0
        assert 0 <= v["label_agreement"] <= 1 and -1 <= v["mean_cosine"] <= 1.0001
        assert set(report["timings_seconds"]) >= {"load", "trace", "validate"}
        if quant in ("fp32", "fp16"):
            assert v["enforced"] and v["passed"]
        else:  # random weights: reported, not enforced (see validate.RANDOM_WEIGHTS_NOTE)
            assert not v["enforced"] and "random weights" in v["note"]
    assert converted[model_type]["fp32"].validation["max_abs_logit_diff"] < 1e-5


def test_quantized_graphs_are_smaller_and_integer(converted):
    for results in converted.values():
        fp32, dynamic, int8 = results["fp32"], results["dynamic"], results["int8"]
        assert dynamic.graph_bytes < fp32.graph_bytes / 2 and int8.graph_bytes < fp32.graph_bytes / 2
        meta = read_artifact(int8.artifact_path).metadata
        ops = meta["graph_ops"]
        # Dense layers and activations are int8; LayerNorm, residual adds and the attention core float,
        # and CAST turns the int32 attention mask into floats. The feed-forward output layers (int8
        # weights) and the reshapes behind them keep float outputs (precision.float_output_nodes).
        assert set(ops["float_op_types"]) <= set(QUANT_MODES["int8"].float_ops) | {"CAST", "FULLY_CONNECTED",
                                                                                   "RESHAPE"}
        assert meta["float_layers"]["groups"] == ["ffn-output"] and meta["float_layers"]["dense_ops_kept_float"] > 0
        assert {"BATCH_MATMUL", "SOFTMAX"} <= set(ops["float_op_types"])  # the attention core
        assert {"FULLY_CONNECTED", "BATCH_MATMUL"} & set(ops["op_versions"])
        # Calibration texts follow the 100 validation texts: none of them is validated on.
        calibration, validation = meta["calibration"], meta["texts"]["validation"]
        assert {k: calibration[k] for k in ("source", "count", "rows")} == {"source": "generated", "count": 50,
                                                                           "rows": [100, 150]}
        assert validation == {"source": "generated", "count": 100, "rows": [0, 100]}
        assert meta["texts"]["calibration_overlaps_validation"] == 0
        assert meta["validation"]["calibration_overlaps_validation"] == 0
        assert len(set(calibration["fingerprints"])) == 50
    fp16 = read_artifact(results_of(converted, "bert", "fp16").artifact_path).metadata
    assert "DEQUANTIZE" in fp16["graph_ops"]["op_versions"]


def results_of(converted, model_type, quant):
    return converted[model_type][quant]


def test_int8_from_the_fp32_graph_equals_tfs_own_int8_path(tmp_path, minilm_dir):
    """graph.quantize_integer reuses the fp32 graph; TF's public converter converts again. Same ops,
    same logits: if a TF upgrade breaks the internal path, this fails."""
    import tensorflow as tf

    from edge_slm.convert.architectures import spec_for
    from edge_slm.convert.graph import QUANT_MODES, convert_graph, graph_facts, quantize_integer, trace
    from edge_slm.convert.weights import build_model, make_config

    spec = spec_for("bert")
    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, "bert")
    config = make_config(spec, json.loads((checkpoint / "config.json").read_text()), None)
    model, _ = build_model(spec, config, TINY_SEQ_LEN, None, seed=0)
    frozen = trace(model, spec, TINY_SEQ_LEN, dynamic=False)  # the samples below are [1, TINY_SEQ_LEN]
    rng = np.random.default_rng(0)
    samples = [[rng.integers(1000, 30000, (1, TINY_SEQ_LEN), dtype=np.int32),
                np.ones((1, TINY_SEQ_LEN), np.int32), np.zeros((1, TINY_SEQ_LEN), np.int32)] for _ in range(8)]

    def representative():
        yield from samples

    # TF's public converter cannot leave ops in float, so compare the all-int8 variant.
    all_int8 = dataclasses.replace(QUANT_MODES["int8"], float_ops=())
    ours = quantize_integer(convert_graph(frozen, QUANT_MODES["fp32"], None), all_int8, representative)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen[3]])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    theirs = converter.convert()
    assert graph_facts(ours)["op_versions"] == graph_facts(theirs)["op_versions"]

    def run(graph):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=graph)
        interpreter.allocate_tensors()
        for detail, array in zip(interpreter.get_input_details(), samples[0]):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    np.testing.assert_allclose(run(ours), run(theirs), atol=1e-6)


@pytest.mark.parametrize("model_type, constant", [("bert", -10000.0), ("distilbert", 1e30)])
def test_softened_attention_mask_keeps_fp32_logits(tmp_path, minilm_dir, model_type, constant):
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.tools import flatbuffer_utils

    from edge_slm.convert.architectures import spec_for
    from edge_slm.convert.graph import QUANT_MODES, convert_graph, soften_attention_mask, trace
    from edge_slm.convert.weights import build_model, make_config

    spec = spec_for(model_type)
    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, model_type)
    config = make_config(spec, json.loads((checkpoint / "config.json").read_text()), None)
    model, _ = build_model(spec, config, TINY_SEQ_LEN, None, seed=0)
    fp32 = convert_graph(trace(model, spec, TINY_SEQ_LEN, dynamic=False), QUANT_MODES["fp32"], None)
    softened = soften_attention_mask(fp32, 20.0)

    def scalar_constants(graph):
        parsed = flatbuffer_utils.convert_bytearray_to_object(graph)
        found = []
        for tensor in parsed.subgraphs[0].tensors:
            data = parsed.buffers[tensor.buffer].data
            if data is not None and tensor.type == 0 and len(data) == 4:
                found.append(float(np.frombuffer(bytes(bytearray(data)), np.float32)[0]))
        return found

    constant = float(np.float32(constant))
    assert constant in scalar_constants(fp32) and constant not in scalar_constants(softened)
    assert np.sign(constant) * 20.0 in scalar_constants(softened)

    def run(graph, mask_length):
        interpreter = Interpreter(model_content=graph)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            array = np.zeros((1, TINY_SEQ_LEN), np.int32)
            if detail["name"] != "token_type_ids":
                array[0, :mask_length] = 1000 if detail["name"] == "input_ids" else 1
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    for length in (3, 9, TINY_SEQ_LEN):  # padding masked as before
        np.testing.assert_allclose(run(softened, length), run(fp32, length), atol=1e-6)


def test_int16x8_graphs_that_crash_the_runtime_are_refused(tmp_path, minilm_dir):
    """TF 2.21's 16x8 BERT graphs abort TFLite's SUB kernel in Prepare; never write such a graph."""
    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, "bert")
    with pytest.raises(EdgeError, match="int16x8 graph crashes the TFLite runtime"):
        convert(str(checkpoint), ["int16x8"], TINY_SEQ_LEN, tmp_path / "out", random_init=True, validate=False)
    assert not list((tmp_path / "out").glob("*.tflite"))


def test_compat_names_and_marks_the_artifact(tmp_path, minilm_dir):
    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, "bert")
    [result] = convert(str(checkpoint), ["dynamic"], TINY_SEQ_LEN, tmp_path, random_init=True,
                       compat="tflite-runtime-2.14", validate=False)
    assert result.artifact_path.endswith("t-dynamic-tflite-runtime-2.14.tflite")
    meta = read_artifact(result.artifact_path).metadata
    assert meta["compat"] == "tflite-runtime-2.14"
    assert meta["validation"] == {"skipped": True}
    assert max(meta["graph_ops"]["op_versions"]["FULLY_CONNECTED"]) < 12


def test_calibration_file_is_split_into_validation_and_calibration_texts(tmp_path, minilm_dir):
    """Validation takes the file's first texts, calibration the ones after them: never the same text."""
    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, "bert")
    texts = tmp_path / "texts.tsv"
    texts.write_text("text\tlabel\n" + "".join(f"sentence number {i} is fine .\t{i % 2}\n" for i in range(30)))
    [result] = convert(str(checkpoint), ["int8"], TINY_SEQ_LEN, tmp_path, random_init=True,
                       calibration=str(texts), calibration_samples=20, validation_samples=0)
    meta = read_artifact(result.artifact_path).metadata
    assert {k: meta["calibration"][k] for k in ("source", "count", "rows")} == {"source": str(texts), "count": 20,
                                                                               "rows": [10, 30]}
    assert meta["validation"]["texts"] == 10 and meta["validation"]["texts_source"] == str(texts)
    report = json.loads(Path(result.report_path).read_text())
    assert report["texts"] == meta["texts"] == result.texts
    assert report["texts"]["validation"] == {"source": str(texts), "count": 10, "rows": [0, 10]}
    assert report["texts"]["calibration_overlaps_validation"] == 0
    assert report["host"]["cpu_features"]["isa"] is not None or report["host"]["machine"] not in ("x86_64", "aarch64")


def test_validation_file_overlapping_the_calibration_is_flagged(tmp_path, minilm_dir, cli_caller):
    """With --data FILE the two sets may overlap: edge-convert warns and marks the agreement."""
    from edge_slm.convert.cli import main

    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, "bert")
    calibration, validation = tmp_path / "calibration.txt", tmp_path / "validation.txt"
    calibration.write_text("".join(f"Sentence  number {i} is fine .\n" for i in range(12)))
    validation.write_text("".join(f"sentence number {i} is FINE .\n" for i in range(8, 20)))  # 8..11 overlap
    code, out, err = cli_caller(main)(checkpoint, "--random-init", "--quant", "fp32,int8", "--seq-len",
                                      TINY_SEQ_LEN, "--calibration", calibration, "--data", validation,
                                      "--validation-samples", 0, "-o", tmp_path, "-q")
    assert code == 0, err
    assert "warning: t int8: calibrated on 4 of its 12 validation texts" in err
    int8_row = next(line for line in out.splitlines() if "t-int8.tflite" in line)
    fp32_row = next(line for line in out.splitlines() if "t-fp32.tflite" in line)
    assert int8_row.endswith("%*") and fp32_row.endswith("%")
    assert "* t int8: calibrated on 4 of its 12 validation texts" in out
    meta = read_artifact(tmp_path / "t-int8.tflite").metadata
    assert meta["texts"]["calibration_overlaps_validation"] == 4
    assert meta["texts"]["validation"]["source"] == str(validation)
    assert read_artifact(tmp_path / "t-fp32.tflite").metadata["texts"]["calibration"] is None  # not calibrated


def test_a_failing_validation_writes_the_report_not_the_artifact(tmp_path, minilm_dir, monkeypatch):
    """A device that returns the logits reversed disagrees on every label."""
    from edge_slm.runtime import engine

    real_logits = engine.Model.logits
    monkeypatch.setattr(engine.Model, "logits", lambda self, texts: real_logits(self, texts)[:, ::-1])
    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, "bert")
    with pytest.raises(ValidationFailed) as caught:
        convert(str(checkpoint), ["fp32"], TINY_SEQ_LEN, tmp_path / "out", random_init=True)
    assert caught.value.exit_code == EXIT_VALIDATION_FAILED
    [result] = caught.value.results
    assert result.artifact_path is None and not list((tmp_path / "out").glob("*.tflite"))
    report = json.loads(Path(result.report_path).read_text())
    assert report["rejected"] is True and report["validation"]["passed"] is False
    assert report["validation"]["label_agreement"] < 0.99


def test_cli_json_and_stage_timings(tmp_path, minilm_dir, capsys):
    from edge_slm.convert.cli import main

    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, "distilbert")
    code = main([str(checkpoint), "--random-init", "--quant", "fp32,dynamic", "--seq-len", "16",
                 "-o", str(tmp_path / "out"), "--json", "--validation-samples", "10"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    assert [r["quant"] for r in document["results"]] == ["fp32", "dynamic"]
    stages = {(s["stage"], s["detail"]) for s in document["stages"]}
    assert {("convert", "fp32"), ("quantize", "dynamic"), ("validate", "dynamic")} <= stages
    assert all(s["seconds"] >= 0 for s in document["stages"])


def test_cli_table_never_prints_accuracy_for_random_weights(tmp_path, minilm_dir, capsys):
    from edge_slm.convert.cli import main

    checkpoint = write_tiny_checkpoint(tmp_path / "t", minilm_dir, "bert")
    code = main([str(checkpoint), "--random-init", "--seq-len", "16", "-o", str(tmp_path), "-q",
                 "--validation-samples", "5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "n/a (random weights)" in out and "%  n/a" not in out.replace("100.0%  n/a", "")


def test_registry_model_falls_back_to_random_weights_offline(tmp_path, monkeypatch):
    from edge_slm.convert import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    monkeypatch.setattr(hub, "_cached_snapshot", lambda hf_id, with_weights: None)
    registry = tmp_path / "tiny.toml"
    registry.write_text('[tiny]\nhf_id = "someone/tiny"\nlabels = ["neg", "pos"]\nseq_len = 16\n'
                        '[tiny.config]\nmodel_type = "mobilebert"\nhidden_size = 32\nembedding_size = 16\n'
                        'num_hidden_layers = 1\nnum_attention_heads = 2\nintermediate_size = 32\n'
                        'intra_bottleneck_size = 16\ntrue_hidden_size = 16\nnum_feedforward_networks = 1\n')
    with pytest.raises(EdgeError, match="hub is unreachable"):
        convert("tiny", ["fp32"], out_dir=tmp_path, registry_files=[registry])
    [result] = convert("tiny", ["fp32"], out_dir=tmp_path, registry_files=[registry], random_init_if_offline=True,
                       validation_samples=5)
    meta = read_artifact(result.artifact_path).metadata
    assert meta["random_weights"] is True and meta["labels"] == ["neg", "pos"]
    assert meta["tokenizer"]["max_seq_len"] == 16 and meta["source"] == "tiny (someone/tiny)"


def test_hub_checkpoints_are_fetched_then_loaded_like_a_directory(tmp_path, minilm_dir, monkeypatch):
    """The download picks config, tokenizer files and one weights file; loading is the local path."""
    import huggingface_hub

    from edge_slm.convert import hub

    source = write_tiny_checkpoint(tmp_path / "remote", minilm_dir, "bert")
    save_pt_safetensors(source, "bert", seed=3)
    (source / "pytorch_model.bin").write_bytes(b"never downloaded: safetensors is preferred")
    downloaded = []

    def fake_download(repo_id, filename):
        downloaded.append(filename)
        target = tmp_path / "cache" / filename
        target.parent.mkdir(exist_ok=True)
        target.write_bytes((source / filename).read_bytes())
        return str(target)

    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(hub, "_cached_snapshot", lambda hf_id, with_weights: None)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id: [p.name for p in source.iterdir()])
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    [result] = convert("someone/tiny-bert", ["fp32"], TINY_SEQ_LEN, tmp_path / "out", validation_samples=5)
    assert sorted(downloaded) == ["config.json", "model.safetensors", "vocab.txt"]
    meta = read_artifact(result.artifact_path).metadata
    assert meta["source"] == "someone/tiny-bert" and meta["weights"]["format"] == "safetensors"


# ---- real-weights loading on tiny checkpoints ---------------------------------------------------

def save_pt_safetensors(directory: Path, model_type: str, seed: int, drop_head: bool = False):
    """Write a PyTorch-layout model.safetensors for the folder's config; returns the TF model whose
    weights it holds (names and layouts by transformers' own TF->PT mapping)."""
    import transformers
    from safetensors.numpy import save_file
    from transformers.modeling_tf_pytorch_utils import apply_transpose, convert_tf_weight_name_to_pt_weight_name

    from edge_slm.convert.architectures import spec_for
    from edge_slm.convert.weights import build_model, make_config

    spec = spec_for(model_type)
    config = make_config(spec, json.loads((directory / "config.json").read_text()), ["negative", "positive"])
    model, _ = build_model(spec, config, TINY_SEQ_LEN, None, seed=seed)
    state = {}
    for variable in model.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(variable.name, tf_weight_shape=variable.shape)
        array = variable.numpy()
        if transpose is not transformers.modeling_tf_pytorch_utils.TransposeType.NO:
            array = np.ascontiguousarray(apply_transpose(transpose, array, pt_to_tf=False))
        if drop_head and spec.is_head_weight(name):
            continue
        state[name] = array
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return model


def assert_every_weight_came_from_the_file(result, original, checkpoint: Path, weights_format: str):
    meta = read_artifact(result.artifact_path).metadata
    assert meta["random_weights"] is False and meta["weights"]["newly_initialized"] == []
    assert meta["weights"]["format"] == weights_format
    assert meta["weights"]["loaded_variables"] == len(original.weights)
    # The converter built its model with another seed: equal logits mean every weight came from the file.
    from edge_slm.convert.validate import encode, hf_tokenizer

    encoded = encode(hf_tokenizer(str(checkpoint / "vocab.txt"), {
        "lowercase": True, "strip_accents": True, "tokenize_chinese_chars": True, "unk_token": "[UNK]",
        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]"}),
        TEXTS, TINY_SEQ_LEN)
    inputs = {k: v for k, v in encoded.items() if k in [i["role"] for i in meta["inputs"]]}
    expected = original(inputs, training=False).logits.numpy()
    np.testing.assert_allclose(load_model(result.artifact_path).logits(TEXTS), expected, atol=1e-5)


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "mobilebert"])
def test_safetensors_weights_load_into_every_variable(tmp_path, minilm_dir, model_type):
    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt", minilm_dir, model_type)
    original = save_pt_safetensors(checkpoint, model_type, seed=7)
    [result] = convert(str(checkpoint), ["fp32"], TINY_SEQ_LEN, tmp_path / "out", seed=99, validation_samples=20)
    assert_every_weight_came_from_the_file(result, original, checkpoint, "safetensors")


def save_pytorch_bin(checkpoint: Path, model_type: str, seed: int):
    """The same checkpoint as save_pt_safetensors, as a PyTorch pickle (torch.save) instead."""
    import torch
    from safetensors.numpy import load_file

    original = save_pt_safetensors(checkpoint, model_type, seed=seed)
    state = {k: torch.from_numpy(v) for k, v in load_file(str(checkpoint / "model.safetensors")).items()}
    (checkpoint / "model.safetensors").unlink()
    torch.save(state, checkpoint / "pytorch_model.bin")
    return original


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_pytorch_bin_weights_load_into_every_variable(tmp_path, minilm_dir, model_type):
    pytest.importorskip("torch")
    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt", minilm_dir, model_type)
    original = save_pytorch_bin(checkpoint, model_type, seed=7)
    [result] = convert(str(checkpoint), ["fp32"], TINY_SEQ_LEN, tmp_path / "out", seed=99, validation_samples=20)
    assert_every_weight_came_from_the_file(result, original, checkpoint, "pytorch")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the pickle ran code"))


def test_a_pytorch_pickle_that_runs_code_is_refused_unrun(tmp_path, minilm_dir):
    """weights_only=True: a pickle that calls a function when loaded is an error, and never runs."""
    torch = pytest.importorskip("torch")
    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt", minilm_dir, "bert")
    marker = tmp_path / "ran"
    torch.save({"bert.embeddings.word_embeddings.weight": _RunsCodeWhenUnpickled(marker)},
               checkpoint / "pytorch_model.bin")
    with pytest.raises(EdgeError, match="cannot read .*pytorch_model.bin"):
        convert(str(checkpoint), ["fp32"], TINY_SEQ_LEN, tmp_path / "out", validate=False)
    assert not marker.exists()


def test_a_base_checkpoint_gets_a_random_head_and_says_so(tmp_path, minilm_dir):
    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt", minilm_dir, "distilbert")
    save_pt_safetensors(checkpoint, "distilbert", seed=7, drop_head=True)
    [result] = convert(str(checkpoint), ["fp32"], TINY_SEQ_LEN, tmp_path / "out", validate=False)
    weights = read_artifact(result.artifact_path).metadata["weights"]
    assert sorted(weights["newly_initialized"]) == ["classifier.bias", "classifier.weight",
                                                    "pre_classifier.bias", "pre_classifier.weight"]
    assert result.random_weights is True


def test_a_checkpoint_missing_encoder_weights_is_refused(tmp_path, minilm_dir):
    from safetensors.numpy import load_file, save_file

    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt", minilm_dir, "bert")
    save_pt_safetensors(checkpoint, "bert", seed=7)
    state = load_file(str(checkpoint / "model.safetensors"))
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(EdgeError, match="lacks 1 of the .* weights .*layer.1.output.dense.weight"):
        convert(str(checkpoint), ["fp32"], TINY_SEQ_LEN, tmp_path / "out", validate=False)


def test_weights_of_another_shape_are_refused(tmp_path, minilm_dir):
    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt", minilm_dir, "bert")
    save_pt_safetensors(checkpoint, "bert", seed=7)
    config = json.loads((checkpoint / "config.json").read_text())
    config["intermediate_size"] = 48
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(EdgeError, match="shapes do not fit its config"):
        convert(str(checkpoint), ["fp32"], TINY_SEQ_LEN, tmp_path / "out", validate=False)


def test_tf_h5_checkpoints_load_through_from_pretrained(tmp_path, minilm_dir):
    from edge_slm.convert.architectures import spec_for
    from edge_slm.convert.weights import build_model, make_config

    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt", minilm_dir, "mobilebert")
    spec = spec_for("mobilebert")
    config = make_config(spec, json.loads((checkpoint / "config.json").read_text()), ["negative", "positive"])
    original, _ = build_model(spec, config, TINY_SEQ_LEN, None, seed=5)
    original.save_pretrained(str(checkpoint), safe_serialization=False)
    assert (checkpoint / "tf_model.h5").is_file()
    [result] = convert(str(checkpoint), ["fp32"], TINY_SEQ_LEN, tmp_path / "out", seed=11, validation_samples=20)
    meta = read_artifact(result.artifact_path).metadata
    assert meta["weights"]["format"] == "tf-h5" and meta["random_weights"] is False
    assert result.validation["max_abs_logit_diff"] < 1e-5
    ids = np.full((1, TINY_SEQ_LEN), 0, np.int32)
    ids[0, :4] = [101, 2023, 2003, 102]
    inputs = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int32),
              "token_type_ids": np.zeros_like(ids)}
    device = load_model(result.artifact_path)
    for slot in device.slots:
        device.buffers[slot.role][...] = inputs[slot.role]
    np.testing.assert_allclose(device.run_prepared(), original(inputs, training=False).logits.numpy(), atol=1e-5)
