"""`convert()`: one model -> one validated artifact per quantization mode. The CLI is a thin shell.

Order of work, cheapest first: every input is checked before TensorFlow is imported; then
load -> trace -> convert (fp32, shared) -> quantize (per mode) -> validate -> write. The model is
built and traced once for all modes; integer modes reuse the fp32 graph (see graph.py).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

from edge_slm.common.documents import edge_slm_version, host_facts, utc_now
from edge_slm.common.errors import EXIT_VALIDATION_FAILED, EdgeError
from edge_slm.common.files import atomic_write_text, prepare_out_dir
from edge_slm.common.native import captured_native_stderr
from edge_slm.common.stages import StageLog
from edge_slm.models.registry import load_registry
from edge_slm.runtime.artifact import build_metadata, sha256_hex, write_artifact
from edge_slm.runtime.data import text_fingerprint
from edge_slm.runtime.engine import load_model

from .architectures import ArchitectureSpec
from .explain import EXPLAIN_TEXTS
from .explain import explain as explain_error
from .graph import (COMPAT_TARGETS, FLOAT_MODES, MASK_MAGNITUDE_FOR_INTEGER_MODES, QUANT_MODES, QuantMode,
                    calibrate_int8, check_graph_io, check_runtime_survives, convert_graph, graph_facts,
                    quantize_calibrated, quantize_integer, soften_attention_mask, split_delegate_partitions, trace)
from .precision import (AUTO_FLOAT_LAYERS, DEFAULT_FLOAT_LAYERS, FLOAT_LAYER_GROUPS, SELECTION_TEXTS, choose_float_group,
                        dynamic_range_dense, float_embedding_table, float_nodes, float_output_nodes,
                        float_position_table, word_table_by_column)
from .source import (ModelSource, locate_weights, packaged_bert_vocab, read_vocab, resolve_source,
                     tokenizer_metadata, tokenizer_settings)
from .texts import (DEFAULT_CALIBRATION_SAMPLES, DEFAULT_VALIDATION_SAMPLES, Texts, calibration_overlap,
                    generated_texts, read_text_file, split_pool)
from .tf_env import tensorflow
from .validate import compare, encode, hf_tokenizer
from .validate import reference as compute_reference
from .weights import build_model, make_config

REPORT_SCHEMA = "edge-slm.convert-report"
@dataclass
class ConversionResult:
    model: str
    quant: str
    artifact_path: Optional[str]   # None when validation rejected the graph
    report_path: str
    seq_len: int
    graph_bytes: int
    file_bytes: Optional[int]
    random_weights: bool
    validation: Optional[dict]     # None with validate=False
    timings: dict                  # stage -> seconds; shared stages (load, trace, convert) included
    reference_accuracy: Optional[dict] = None  # the registry's model-card figure (fp32)
    explanation: Optional[dict] = None  # where the error comes from (explain.explain), --explain or a failed mode
    sequence: Optional[dict] = None  # {"kind": "dynamic" | "fixed", "max_len"}: the metadata's "sequence"
    texts: Optional[dict] = None   # validation and calibration texts: sources, rows, overlap

    @property
    def passed(self) -> bool:
        return self.artifact_path is not None

    def as_dict(self) -> dict:
        return asdict(self)


class ValidationFailed(EdgeError):
    """Some modes failed validation; `results` holds every mode's result (reports are written)."""

    def __init__(self, message: str, hint: str, results: list):
        super().__init__(message, hint, exit_code=EXIT_VALIDATION_FAILED)
        self.results = results


def convert(source: str, quant_modes: Iterable = ("dynamic",), seq_len: Optional[int] = None,
            out_dir=".", *, random_init: bool = False, calibration: Optional[str] = None,
            compat: Optional[str] = None, validate: bool = True,
            validation_samples: int = DEFAULT_VALIDATION_SAMPLES,
            calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
            min_agreement: Optional[float] = None, config_overrides: Optional[dict] = None,
            registry_files: Iterable = (), random_init_if_offline: bool = False, seed: int = 0,
            progress: Optional[StageLog] = None, explain: bool = False,
            int8_float_layers: Iterable = DEFAULT_FLOAT_LAYERS, data: Optional[str] = None,
            float_embeddings: bool = False, fixed_length: bool = False) -> list:
    """Convert `source` (registry name, checkpoint directory or hub id) into one artifact per mode.

    Returns a ConversionResult per mode, in the order given. Raises EdgeError for bad input and
    ValidationFailed (exit code 3) when a mode's label agreement is below its threshold; the
    artifact of a failing mode is not written, its report is. Validation runs on `data` (texts the
    model was not trained on), else `calibration`, else the held-out (else training) file that an
    edge-train checkpoint's train_report.json records, else texts generated from the vocab. With
    `explain`, every quantized mode's result and report say which ops and layers carry its error
    (a failing mode's always do).
    Artifacts serve any length up to seq_len (each request runs at its own length) unless
    fixed_length, which pads every request to it.
    """
    modes = parse_quant_modes(quant_modes)
    check_seq_len(seq_len)
    compat_target = _compat(compat)
    if validation_samples < 0 or (validation_samples == 0 and calibration is None and data is None):
        raise EdgeError(f"--validation-samples must be positive (0 = all texts of --data, or of "
                        f"--calibration that calibration does not take), "
                        f"got {validation_samples}", f"e.g. --validation-samples {DEFAULT_VALIDATION_SAMPLES}")
    if calibration_samples < 1:
        raise EdgeError(f"--calibration-samples must be at least 1, got {calibration_samples}",
                        f"e.g. --calibration-samples {DEFAULT_CALIBRATION_SAMPLES}")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise EdgeError(f"--min-agreement must be within [0, 1], got {min_agreement}", "e.g. --min-agreement 0.95")
    int8_float_layers = tuple(int8_float_layers)
    unknown = [g for g in int8_float_layers if g not in FLOAT_LAYER_GROUPS and g != AUTO_FLOAT_LAYERS]
    if unknown:
        raise EdgeError(f"unknown --int8-float-layers group {unknown[0]!r}",
                        f"one of {', '.join(FLOAT_LAYER_GROUPS)}, or {AUTO_FLOAT_LAYERS}")
    if AUTO_FLOAT_LAYERS in int8_float_layers and len(int8_float_layers) > 1:
        raise EdgeError(f"--int8-float-layers {AUTO_FLOAT_LAYERS} chooses the group itself and takes no other",
                        f"--int8-float-layers {AUTO_FLOAT_LAYERS}, or a list of {', '.join(FLOAT_LAYER_GROUPS)}")
    src = resolve_source(source, load_registry(registry_files))
    file_texts = read_text_file(calibration) if calibration else None
    data_texts = read_text_file(data, "--data") if data else None
    out = prepare_out_dir(out_dir)  # after the inputs' checks: a refused run leaves no folder behind
    log = progress or StageLog(enabled=False)
    job = _Job(src, modes, seq_len, out, random_init, file_texts, compat_target, validate,
               (validation_samples, calibration_samples),
               min_agreement, config_overrides, random_init_if_offline, seed, log, explain, int8_float_layers,
               data_texts, float_embeddings)
    job.dynamic = not fixed_length
    return job.run()


def parse_quant_modes(quant_modes: Iterable) -> list:
    names = [quant_modes] if isinstance(quant_modes, str) else list(quant_modes)
    if not names:
        raise EdgeError("no quantization mode given", f"pass --quant with one of {', '.join(QUANT_MODES)}")
    unknown = [n for n in names if n not in QUANT_MODES]
    if unknown:
        raise EdgeError(f"unknown quantization mode {unknown[0]!r}", f"one of {', '.join(QUANT_MODES)}")
    return [QUANT_MODES[n] for n in dict.fromkeys(names)]


def check_seq_len(seq_len: Optional[int]) -> None:
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2):
        raise EdgeError(f"--seq-len must be an integer of at least 2 ([CLS] and [SEP]), got {seq_len}",
                        "e.g. --seq-len 128")


def _compat(compat: Optional[str]):
    if compat is None:
        return None
    if compat not in COMPAT_TARGETS:
        raise EdgeError(f"unknown --compat target {compat!r}", f"one of {', '.join(COMPAT_TARGETS)}")
    return COMPAT_TARGETS[compat]


def artifact_name(model: str, mode: str, compat) -> str:
    return f"{model}-{mode}{'-' + compat.name if compat else ''}.tflite"


class _Job:
    """One conversion: the state shared by all of a model's quantization modes."""

    def __init__(self, src: ModelSource, modes, seq_len, out: Path, random_init, file_texts, compat,
                 validate, sample_counts, min_agreement, config_overrides, random_init_if_offline, seed, log,
                 explain=False, int8_float_layers=(), data_texts=None, float_embeddings=False):
        self.src, self.modes, self.out, self.compat = src, modes, out, compat
        self.seq_len, self.random_init, self.validate = seq_len, random_init, validate
        self.validation_samples, self.calibration_samples = sample_counts
        self.file_texts, self.min_agreement = file_texts, min_agreement
        self.config_overrides, self.random_init_if_offline, self.seed = config_overrides, random_init_if_offline, seed
        self.log, self.explain, self.int8_float_layers = log, explain, int8_float_layers
        self.data_texts, self.float_embeddings = data_texts, float_embeddings
        self.name = src.name
        self.dynamic = True  # length-aware graph (shape_signature [1, -1]); False: --fixed-length

    # ---- the pipeline ----------------------------------------------------------------------
    def run(self) -> list:
        with tempfile.TemporaryDirectory(prefix="edge-convert-") as scratch:
            self.scratch = Path(scratch)
            return self._run()

    def _run(self) -> list:
        weights_file = locate_weights(self.src, self.random_init, self.log, self.random_init_if_offline)
        if weights_file is None:
            self.log.note(self.name, "random weights (--random-init): its predictions mean nothing")
        self.src.config = {**self.src.config, **(self.config_overrides or {})}
        spec: ArchitectureSpec = self.src.spec
        limit = self.src.config.get("max_position_embeddings", 512)
        seq_len = self.seq_len or min(self.src.default_seq_len, limit if isinstance(limit, int) else 512)
        if not self.seq_len and seq_len < self.src.default_seq_len:  # the default, not the user's: say so
            self.log.note(self.name, f"sequence length {seq_len}, the model's max_position_embeddings "
                                     f"(the default {self.src.default_seq_len} is longer)")
        self._check_positions(seq_len)
        vocab, vocab_origin = read_vocab(self.src.directory)
        settings = tokenizer_settings(self.src.directory)
        tokenizer_meta = tokenizer_metadata(settings, vocab, seq_len)
        self._check_vocab_size(vocab)
        texts, calibration_texts = self._texts(vocab, seq_len)
        # Only possible when --data and the calibration are different files: the CLI warns, the reports and metadata record it.
        texts_record = {"validation": texts.describe(),
                        "calibration": calibration_texts.describe() if calibration_texts else None,
                        "calibration_overlaps_validation": calibration_overlap(texts, calibration_texts)}

        config = make_config(spec, self.src.config, self.src.labels)
        labels = [config.id2label[i] for i in range(config.num_labels)]
        with self.log.stage(self.name, "load", "random weights" if weights_file is None else weights_file.name):
            model, weights = build_model(spec, config, seq_len, weights_file, self.seed)
        if weights.newly_initialized:
            self.log.note(self.name, f"the checkpoint has no {', '.join(weights.newly_initialized)}: that head is "
                                     "random, so the artifact's predictions mean nothing until it is fine-tuned")
        with self.log.stage(self.name, "trace", f"{spec.tf_class} [1, {'<= ' if self.dynamic else ''}{seq_len}]"):
            frozen = trace(model, spec, seq_len, self.dynamic)

        tokenizer = None
        if self.validate or self.explain or any(m.integer for m in self.modes):
            tokenizer = hf_tokenizer(self._vocab_path(vocab), settings)
        reference = None
        if self.validate:
            with self.log.stage(self.name, "validate", f"TF reference on {len(texts.texts)} texts"):
                reference = compute_reference(model, tokenizer, texts.texts, seq_len, spec, padded=not self.dynamic)

        fp32_graph = None
        # dynamic copies the position table (length-aware) and the word table's values from the fp32 graph
        if any(m.name in ("fp32", "dynamic") or m.integer or self.explain for m in self.modes):
            with self.log.stage(self.name, "convert", "fp32"):
                fp32_graph = convert_graph(frozen, QUANT_MODES["fp32"], self.compat)

        context = dict(spec=spec, config=config, labels=labels, seq_len=seq_len, tokenizer_meta=tokenizer_meta,
                       vocab=vocab, vocab_origin=vocab_origin, weights=weights, texts=texts,
                       calibration_texts=calibration_texts, reference=reference, frozen=frozen,
                       fp32_graph=fp32_graph, tokenizer=tokenizer, texts_record=texts_record)
        results = []
        for mode in self.modes:
            if mode.name == "fp32":
                graph = fp32_graph
            elif mode.integer:
                self.log.note(self.name, f"calibrating {mode.name} on {len(calibration_texts.texts)} texts "
                                         f"({calibration_texts.source})")
                softened = soften_attention_mask(fp32_graph, MASK_MAGNITUDE_FOR_INTEGER_MODES)
                representative = self._representative(tokenizer, calibration_texts, seq_len, fp32_graph,
                                                      padded=not self.dynamic)
                if mode.name == "int8" and self.int8_float_layers == (AUTO_FLOAT_LAYERS,):
                    graph, context["float_layers"] = self._int8_auto_float(mode, softened, representative,
                                                                           tokenizer, calibration_texts, seq_len)
                elif mode.name == "int8":
                    with self.log.stage(self.name, "quantize", mode.name):
                        kept = float_nodes(softened, self.int8_float_layers)
                        graph = self._int8_keeping(calibrate_int8(softened, representative), mode, softened, kept)
                    context["float_layers"] = self._float_layers_record(list(self.int8_float_layers) if kept else [],
                                                                        kept)
                else:
                    with self.log.stage(self.name, "quantize", mode.name):
                        graph = quantize_integer(softened, mode, representative)
                if mode.name == "int8":
                    graph, context["word_table"] = self._word_table(graph, fp32_graph)
            else:
                with self.log.stage(self.name, "quantize", mode.name):
                    graph = convert_graph(frozen, mode, self.compat)
                    if mode.name == "dynamic" and self.dynamic:
                        positioned = float_position_table(graph, fp32_graph)
                        context["float_position_table"] = positioned is not graph
                        graph = positioned
                    if mode.name == "dynamic":
                        graph, context["word_table"] = self._word_table(graph, fp32_graph)
            if self.dynamic:  # length changes re-plan XNNPACK partitions: keep each small (graph.py)
                graph, context["partition_ends"] = split_delegate_partitions(graph)
            results.append(self._finish(mode, graph, graph_facts(graph), context))
        self._release(model)
        failed = [r for r in results if not r.passed]
        if failed:
            detail = "; ".join(f"{r.quant}: margin-aware label agreement "
                               f"{r.validation['margin_aware_agreement']:.3f} < "
                               f"{r.validation['min_agreement']:.3f}" for r in failed)
            raise ValidationFailed(f"{self.name}: validation failed ({detail}); those artifacts were not written",
                                   f"see {failed[0].report_path}; --min-agreement or --no-validate to keep them",
                                   results)
        return results

    def _finish(self, mode: QuantMode, graph: bytes, facts: dict, ctx: dict) -> ConversionResult:
        spec, config, labels, seq_len = ctx["spec"], ctx["config"], ctx["labels"], ctx["seq_len"]
        inputs = check_graph_io(facts, spec, seq_len, len(labels), self.dynamic)
        path = self.out / artifact_name(self.name, mode.name, self.compat)
        report_path = path.with_name(path.name + ".report.json")
        weights = ctx["weights"]
        import transformers  # deferred (it loads TensorFlow); tensorflow() above already did: no cost here

        extra = {
            "model": {"name": self.name, "architecture": spec.tf_class, "model_type": spec.model_type,
                      "num_labels": len(labels), "num_layers": config.num_hidden_layers,
                      "hidden_size": config.hidden_size,
                      "reference": self.src.entry.reference if self.src.entry else None},
            "tools": {"tensorflow": tensorflow().__version__, "transformers": transformers.__version__,
                      "edge_slm": edge_slm_version()},
            "created": utc_now(),
            "weights": weights.as_dict(),
            "compat": self.compat.name if self.compat else None,
            # Readers of format 1 without this key: a fixed-length graph (artifacts before it existed).
            "sequence": {"kind": "dynamic" if self.dynamic else "fixed", "max_len": seq_len},
            "graph_ops": {k: facts[k] for k in ("op_count", "float_op_count", "float_op_types", "op_versions")},
            "quantization_detail": mode.description,
            "float_embeddings": self.float_embeddings and mode.name in ("dynamic", "int8"),  # --float-embeddings
            "word_table": ctx.get("word_table") if mode.name in ("dynamic", "int8") else None,
            # length-aware dynamic: the position table stays float, as a fixed graph folds it (precision.py)
            "float_position_table": ctx.get("float_position_table", False) and mode.name == "dynamic",
            # length-aware: copies of the hidden states that end an XNNPACK partition (graph.split_delegate_partitions)
            "partition_ends": ctx.get("partition_ends", 0),
            "vocab_source": ctx["vocab_origin"],
            # Only an integer mode is calibrated: the others' record says so.
            "texts": ctx["texts_record"] if mode.integer else {**ctx["texts_record"], "calibration": None,
                                                              "calibration_overlaps_validation": 0},
        }
        if mode.integer:
            # Fingerprints, not texts: an evaluation on data that overlaps them says so (edge-run, edge-bench).
            extra["calibration"] = {**ctx["calibration_texts"].describe(),
                                    "fingerprints": [text_fingerprint(t) for t in ctx["calibration_texts"].texts]}
            # --int8-float-layers: which dense layers kept float outputs (int8 only)
            extra["float_layers"] = ctx["float_layers"] if mode.name == "int8" else None
        common = dict(graph=graph, tokenizer=ctx["tokenizer_meta"], labels=labels, inputs=inputs,
                      outputs=[{"name": facts["outputs"][0]["name"], "role": "logits"}], quantization=mode.name,
                      random_weights=weights.random_weights, source=self.src.description)
        provisional = write_artifact(self.scratch / path.name, graph, build_metadata(**common, extra=extra),
                                     ctx["vocab"], labels)
        check_runtime_survives(provisional, mode, seq_len)  # even with --no-validate: never ship a crashing graph
        validation = None
        if self.validate:
            with self.log.stage(self.name, "validate", mode.name):
                validation = self._validate(mode, provisional, ctx)
        extra["validation"] = validation if validation is not None else {"skipped": True}
        explanation = None
        if mode.name != "fp32" and (self.explain or (validation is not None and not validation["passed"])):
            with self.log.stage(self.name, "explain", mode.name):
                explanation = self._explain(mode, graph, ctx)
        metadata = build_metadata(**common, extra=extra)
        written = validation is None or validation["passed"]
        with self.log.stage(self.name, "write", path.name if written else f"{report_path.name} (rejected)"):
            if written:
                write_artifact(path, graph, metadata, ctx["vocab"], labels)
            timings = self._timings(mode)
            report = {"schema": REPORT_SCHEMA, "schema_version": 1, "created": extra["created"],
                      "artifact": str(path) if written else None, "rejected": not written,
                      "source": self.src.description, "quantization": mode.name, "seq_len": seq_len,
                      "random_weights": weights.random_weights,
                      "graph": {"bytes": len(graph), "sha256": sha256_hex(graph), **facts},
                      "file_bytes": path.stat().st_size if written else None,
                      "validation": extra["validation"], "timings_seconds": timings,
                      **{k: extra[k] for k in ("model", "tools", "weights", "compat", "sequence")},
                      "calibration": extra.get("calibration"), "explain": explanation, "texts": extra["texts"],
                      "host": host_facts()}
            atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
        return ConversionResult(model=self.name, quant=mode.name, artifact_path=str(path) if written else None,
                                report_path=str(report_path), seq_len=seq_len, graph_bytes=len(graph),
                                file_bytes=report["file_bytes"], random_weights=weights.random_weights,
                                validation=validation, timings=timings,
                                reference_accuracy=extra["model"]["reference"], explanation=explanation,
                                sequence=extra["sequence"], texts=extra["texts"])

    def _explain(self, mode: QuantMode, graph: bytes, ctx: dict) -> dict:
        """The ops and layers that carry `graph`'s error against the fp32 graph it was made from, on the
        first validation texts."""
        if ctx["fp32_graph"] is None:  # a failed dynamic/fp16 mode without --explain: the fp32 graph is new
            ctx["fp32_graph"] = convert_graph(ctx["frozen"], QUANT_MODES["fp32"], self.compat)
        reference = ctx["fp32_graph"]
        if mode.integer:  # made from the fp32 graph with the mask softened: compare like with like
            reference = soften_attention_mask(reference, MASK_MAGNITUDE_FOR_INTEGER_MODES)
        texts = ctx["texts"].texts[:EXPLAIN_TEXTS]
        encoded = encode(ctx["tokenizer"], texts, ctx["seq_len"])
        samples = [{name: encoded[name][i:i + 1] for name in ctx["spec"].inputs} for i in range(len(texts))]
        result = explain_error(reference, graph, samples)
        return {**result, "texts_source": ctx["texts"].source}

    def _int8_auto_float(self, mode: QuantMode, softened: bytes, representative, tokenizer, calibration_texts,
                         seq_len: int) -> tuple:
        """(int8 graph, float_layers record) for --int8-float-layers auto: calibrated once, quantized
        once per candidate group (precision.choose_float_group), compared on held-out texts of the
        calibration pool (the calibration texts' own ranges flatter every candidate)."""
        self.log.note(self.name, f"{mode.name}: choosing the dense group to keep float (one quantization per "
                                 f"group, on {len(self.selection_texts.texts)} held-out texts)")
        with self.log.stage(self.name, "quantize", mode.name):
            calibrated = calibrate_int8(softened, representative)
            texts = self.selection_texts
            if not texts.texts:  # the pool had no text left after validation and calibration
                texts = calibration_texts.take(0, SELECTION_TEXTS)
            names = self._input_names(softened)
            samples = [dict(zip(names, row)) for row in
                       self._representative(tokenizer, texts, seq_len, softened, padded=not self.dynamic)()]
            kept, selection = choose_float_group(softened, lambda nodes: self._int8_keeping(calibrated, mode, softened,
                                                                                            nodes), samples)
            selection["texts"] = {**texts.describe(), "held_out": texts is self.selection_texts}
            graph = self._int8_keeping(calibrated, mode, softened, kept)
        ranking = ", ".join(f"{c['group']} {c['relative_noise']:.2e}" for c in selection["candidates"][:3])
        self.log.note(self.name, f"int8 relative logit noise {selection['all_int8_relative_noise']:.2e} all int8; "
                                 f"with one group float: {ranking}; kept float: {selection['chosen'] or 'none'}")
        return graph, {**self._float_layers_record([selection["chosen"]] if kept else [], kept),
                       "selection": selection}

    def _int8_keeping(self, calibrated: bytes, mode: QuantMode, reference: bytes, dense_nodes) -> bytes:
        """int8 from the calibrated graph, the dense layers `dense_nodes` keeping float outputs with
        int8 weights and dynamic-range kernels (precision.py's docstring says why)."""
        graph = quantize_calibrated(calibrated, mode, float_output_nodes(reference, dense_nodes))
        return dynamic_range_dense(graph, self._per_channel_dynamic_dense)[0]

    @property
    def _per_channel_dynamic_dense(self) -> bool:
        return self.compat is None or not self.compat.per_tensor_dynamic_dense

    def _float_layers_record(self, groups: list, dense_nodes) -> dict:
        scales = "a scale per output channel" if self._per_channel_dynamic_dense else "one scale"
        return {"groups": groups, "dense_ops_kept_float": len(dense_nodes),
                "kept_as": (f"float outputs; int8 weights ({scales}), the input quantized per token at run time"
                            if dense_nodes else None)}

    def _word_table(self, graph: bytes, fp32_graph: bytes) -> tuple:
        """(graph, how its word-embedding table is stored): float32 with --float-embeddings, else int8
        with a scale per column (precision.word_table_by_column; one scale for a runtime without a
        per-channel DEQUANTIZE)."""
        if self.float_embeddings:
            return float_embedding_table(graph, fp32_graph), "float32"
        per_column = self.compat is None or self.compat.per_channel_dequantize
        stored = word_table_by_column(graph, fp32_graph, per_column)
        if stored is graph:
            return graph, None
        return stored, "int8, a scale per column" if per_column else "int8, one scale"

    @staticmethod
    def _input_names(graph: bytes) -> list:
        return [t["name"] for t in graph_facts(graph)["inputs"]]

    def _validate(self, mode: QuantMode, provisional: Path, ctx: dict) -> dict:
        """Run the provisional artifact through the device runtime against the TF reference."""

        threshold = self.min_agreement if self.min_agreement is not None else mode.min_agreement
        enforced = (self.min_agreement is not None or not ctx["weights"].random_weights
                    or mode.name in FLOAT_MODES)
        with captured_native_stderr():  # the runtime's "Created XNNPACK delegate" line
            device_model = load_model(provisional)
            metrics = compare(ctx["reference"], device_model, threshold, enforced)
        metrics["texts_source"] = ctx["texts"].source
        metrics["calibration_overlaps_validation"] = (ctx["texts_record"]["calibration_overlaps_validation"]
                                                      if mode.integer else 0)
        metrics["backend"] = device_model.backend.describe()
        return metrics

    # ---- helpers ---------------------------------------------------------------------------
    def _check_positions(self, seq_len: int) -> None:
        limit = self.src.config.get("max_position_embeddings", 512)
        if isinstance(limit, int) and seq_len > limit:
            raise EdgeError(f"--seq-len {seq_len} exceeds the model's max_position_embeddings ({limit})",
                            f"use --seq-len {limit} or less")

    def _check_vocab_size(self, vocab: list) -> None:
        size = self.src.config.get("vocab_size")
        if isinstance(size, int) and len(vocab) > size:
            raise EdgeError(f"the vocabulary has {len(vocab)} tokens but the model embeds only {size}",
                            "the vocab and config.json belong to different models")

    def _texts(self, vocab: list, seq_len: int) -> tuple:
        """(validation texts, calibration texts or None without an integer mode). Validation runs on
        --data, else --calibration, else the held-out (else training) file an edge-train checkpoint
        records; calibration on --calibration, else the recorded training file, else --data. Texts of
        one pool are split: validation first, calibration after, so none is both."""
        calibrating = any(m.integer for m in self.modes)
        calibration_count = self.calibration_samples if calibrating else 0
        recorded_train, recorded_held_out = self._recorded_texts()
        pool = self.file_texts or recorded_train or self.data_texts
        validation = self.data_texts or self.file_texts or recorded_held_out or recorded_train
        if pool is None:
            pool = Texts(generated_texts(vocab, self.validation_samples + calibration_count + SELECTION_TEXTS, seq_len),
                         "generated")
        validation = validation or pool
        if validation is pool:
            validation, calibration = split_pool(pool, self.validation_samples, calibration_count)
        else:
            validation = validation.take(0, self.validation_samples or None)
            calibration = pool.take(0, calibration_count)
        # --int8-float-layers auto compares candidates on the pool's next texts: neither calibrated nor validated on
        self.selection_texts = pool.take(calibration.start - pool.start + len(calibration.texts), SELECTION_TEXTS)
        return validation, calibration if calibrating else None

    def _recorded_texts(self) -> tuple:
        """(training texts, held-out texts) of an edge-train checkpoint, from the files its
        train_report.json names, when they are still there; (None, None) otherwise."""
        report_path = self.src.directory / "train_report.json" if self.src.directory else None
        if report_path is None or not report_path.is_file() or (self.file_texts and self.data_texts):
            return None, None
        try:
            recorded = json.loads(report_path.read_text(encoding="utf-8")).get("data") or {}
        except (OSError, ValueError):
            return None, None
        found = []
        for split in ("train", "dev"):
            path = (recorded.get(split) or {}).get("path")
            found.append(read_text_file(path) if path and Path(path).is_file() else None)
        return tuple(found)

    def _vocab_path(self, vocab: list) -> str:
        """A vocab.txt for HF's tokenizer: the checkpoint's own, or one written from the tokens."""
        directory = self.src.directory
        if directory is not None and (directory / "vocab.txt").is_file():
            return str(directory / "vocab.txt")
        if directory is None:
            return str(packaged_bert_vocab())
        path = self.scratch / "vocab.txt"
        path.write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
        return str(path)

    @staticmethod
    def _representative(tokenizer, texts: Texts, seq_len: int, fp32_graph: bytes, padded: bool):
        """Calibration inputs in the fp32 graph's input order: each text at its own length for a
        length-aware graph (the calibrator resizes the inputs), as the device will run it."""

        order = _Job._input_names(fp32_graph)
        rows = [encode(tokenizer, [text], seq_len, padded) for text in texts.texts]

        def samples():
            for row in rows:
                yield [row[name] for name in order]

        return samples

    def _timings(self, mode: QuantMode) -> dict:
        log, name = self.log, self.name
        timings = {"load": log.seconds(name, "load"), "trace": log.seconds(name, "trace")}
        if mode.name == "fp32" or mode.integer:
            timings["convert"] = log.seconds(name, "convert")
        if mode.name != "fp32":
            timings["quantize"] = log.seconds(name, "quantize", mode.name)
        if self.validate:
            timings["validate"] = round(log.seconds(name, "validate", mode.name)
                                        + sum(t["seconds"] for t in log.timings if t["model"] == name and
                                              t["stage"] == "validate" and t["detail"].startswith("TF reference")), 2)
        return timings

    @staticmethod
    def _release(model) -> None:
        del model
        tensorflow().keras.backend.clear_session()
