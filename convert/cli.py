"""`edge-convert`: a thin click shell over `edge_slm.convert.api.convert`.

Exit codes (README "Conventions"): 0 converted (and validated), 2 bad input, 4 validation failed,
130 interrupted by Ctrl-C or SIGTERM (no partial artifact is left).
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import click

from edge_slm.common.cli import CONTEXT_SETTINGS, FINITE, output_options, run_click, warn
from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY, accuracy_withheld
from edge_slm.common.errors import EXIT_VALIDATION_FAILED, EdgeError
from edge_slm.common.stages import StageLog
from edge_slm.models.registry import load_registry

from .api import ValidationFailed, convert
from .explain import render_explanation
from .precision import AUTO_FLOAT_LAYERS, DEFAULT_FLOAT_LAYERS, FLOAT_LAYER_GROUPS
from .graph import COMPAT_TARGETS, QUANT_MODES
from .texts import DEFAULT_CALIBRATION_SAMPLES, DEFAULT_VALIDATION_SAMPLES

_THRESHOLDS = ", ".join(f"{m.name} {m.min_agreement:.2f}" for m in QUANT_MODES.values())


def _split_modes(ctx, param, values) -> list:
    """--quant dynamic --quant int8 and --quant dynamic,int8 mean the same."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("models", nargs=-1, metavar="MODEL...")
@click.option("--quant", "quant_modes", multiple=True, callback=_split_modes,
              help=f"Quantization, repeatable or comma-separated: {', '.join(QUANT_MODES)} (default dynamic).")
@click.option("--seq-len", type=int, help="Longest sequence the graph serves (default: registry, else 128).")
@click.option("--fixed-length", is_flag=True, help="Trace at exactly --seq-len: every request padded to it "
                                                   "(default: each request runs at its own length).")
@click.option("--calibration", help="Texts for int8/int16x8 calibration and for validation: TSV/CSV/JSONL/plain "
                                    "(default: texts generated from the vocab). From one file, validation takes the "
                                    "first texts and calibration the ones after them: no text is used for both.")
@click.option("--data", help="Texts to validate on, not trained on (e.g. the dev set): TSV/CSV/JSONL/plain. "
                             "Default: --calibration, else the held-out file an edge-train checkpoint records.")
@click.option("--validation-samples", type=int, default=DEFAULT_VALIDATION_SAMPLES, show_default=True,
              help="Texts to validate on (0 = every text of --data, or every text of --calibration that "
                   "calibration does not take).")
@click.option("--calibration-samples", type=int, default=DEFAULT_CALIBRATION_SAMPLES, show_default=True,
              help="Texts to calibrate int8/int16x8 on.")
@click.option("--compat", type=click.Choice(sorted(COMPAT_TARGETS)),
              help="Make graphs an older runtime loads (per-tensor dense weights).")
@click.option("--random-init", is_flag=True, help="Random weights (architecture from the registry or config.json).")
@click.option("--random-init-if-offline", is_flag=True,
              help="For registry models: random weights when the Hugging Face hub is unreachable.")
@click.option("--no-validate", is_flag=True, help="Skip comparing the artifact with the TF model.")
@click.option("--min-agreement", type=FINITE,
              help=f"Label agreement with the TF model a mode must reach (defaults: {_THRESHOLDS}; "
                   "with random weights only fp32/fp16 are held to them, unless this is given).")
@click.option("--int8-float-layers", default=",".join(DEFAULT_FLOAT_LAYERS) or "none", show_default=True,
              help=f"int8: dense layers that keep float outputs, with int8 weights and dynamic-range kernels "
                   f"(the input quantized per token at run time), comma-separated ({', '.join(FLOAT_LAYER_GROUPS)}: "
                   "the feed-forward outputs, whose outlier channels a static int8 output zeroes the rest of; "
                   f"'{AUTO_FLOAT_LAYERS}': the one group of dense layers that lowers the error most, measured; "
                   "'none': every dense layer static int8, for int8-only accelerators). Recorded in the "
                   "artifact's metadata.")
@click.option("--float-embeddings", is_flag=True,
              help="dynamic, int8: keep the embedding tables in float32 (more accurate, a larger file). "
                   "Recorded in the artifact's metadata.")
@click.option("--explain", is_flag=True,
              help="Say which ops and layers carry each quantized artifact's error against fp32 (also in its "
                   "report; a mode that fails validation always gets it).")
@click.option("--registry", "registry_files", multiple=True, help="Extra registry TOML file(s) (repeatable).")
@click.option("-o", "--out-dir", default=".", show_default=True, help="Where the artifacts and reports go.")
@output_options
@click.option("--list", "list_models", is_flag=True, help="List the registry's models and exit.")
def command(models, quant_modes, seq_len, fixed_length, calibration, data, validation_samples, calibration_samples, compat, random_init, random_init_if_offline,
            no_validate, min_agreement, int8_float_layers, float_embeddings, explain, registry_files, out_dir, as_json, quiet, list_models):
    """Convert BERT-family models (registry name, checkpoint directory or hub id owner/name) into
    quantized, validated TFLite artifacts for edge-run.

    Exit status: 0 converted and validated, 2 bad input, 4 validation failed (report written,
    artifact not), 130 interrupted."""
    if list_models:
        click.echo(_render_registry(registry_files, as_json))
        return
    if not models:
        raise EdgeError("no MODEL given", "pass a registry name (see --list), a checkpoint directory or a hub id")
    log = StageLog(enabled=not quiet)
    results, failures = [], []
    for model in models:
        try:
            results += convert(model, quant_modes or ["dynamic"], seq_len, out_dir, random_init=random_init,
                               calibration=calibration, compat=compat, validate=not no_validate,
                               validation_samples=validation_samples,
                               calibration_samples=calibration_samples, min_agreement=min_agreement, registry_files=registry_files,
                               random_init_if_offline=random_init_if_offline, progress=log, explain=explain, data=data, float_embeddings=float_embeddings,
                               int8_float_layers=[g for g in int8_float_layers.split(",") if g.strip() not in ("", "none")],
                               fixed_length=fixed_length)
        except ValidationFailed as e:  # the other models still get converted
            results += e.results
            failures.append(e)
    for r in results:
        if calibrated_on_validation(r):
            warn(f"{r.model} {r.quant}: {_overlap_text(r)}")
    if as_json:
        click.echo(json.dumps({"results": [r.as_dict() for r in results], "stages": log.timings}, indent=2))
    else:
        click.echo(render_results(results))
        for result in results:
            if result.explanation:
                click.echo(render_explanation(f"{result.model} {result.quant}", result.explanation))
    if failures:
        raise EdgeError("; ".join(f.message for f in failures), failures[0].hint, exit_code=EXIT_VALIDATION_FAILED)


def calibrated_on_validation(result) -> int:
    """How many of its validation texts an artifact was also calibrated on (0 unless an integer mode)."""
    return (result.texts or {}).get("calibration_overlaps_validation", 0)


def _overlap_text(result) -> str:
    return (f"calibrated on {calibrated_on_validation(result)} of its {result.texts['validation']['count']} "
            "validation texts: its agreement is partly in-sample")


def render_results(results: list) -> str:
    lines = [f"{'artifact':<44} {'MB':>7} {'max|Δlogit|':>11} {'agree':>8}"]
    marked = []
    for r in results:
        v = r.validation
        delta = f"{v['max_abs_logit_diff']:.2e}" if v else "-"
        agree = f"{v['label_agreement'] * 100:.1f}%" if v else "-"
        if v and calibrated_on_validation(r):
            marked.append(r)
            agree += "*"
        size = f"{r.file_bytes / 1e6:.1f}" if r.file_bytes else "-"
        name = r.artifact_path or f"(rejected) {r.report_path}"
        lines.append(f"{name:<44} {size:>7} {delta:>11} {agree:>8}")
    lines += [f"* {r.model} {r.quant}: {_overlap_text(r)}" for r in marked]
    # The model card's figure is the source model's (fp32, before conversion): once per model.
    sources = {r.model: r for r in results}
    lines += [f"source {name}: accuracy {_source_accuracy(r)}" for name, r in sources.items()]
    return "\n".join(lines)


def _source_accuracy(result) -> str:
    if accuracy_withheld(result.random_weights):
        return RANDOM_WEIGHTS_ACCURACY
    reference = result.reference_accuracy
    if not reference:
        return "not on record (no model-card figure in the registry)"
    return f"{reference['accuracy'] * 100:.1f} % on {reference['dataset']} (model card, fp32)"


def _render_registry(registry_files, as_json: bool) -> str:
    registry = load_registry(registry_files)
    if as_json:
        return json.dumps({name: {"hf_id": e.hf_id, "base_id": e.base_id, "model_type": e.model_type,
                                  "labels": e.labels, "seq_len": e.seq_len, "reference": e.reference}
                           for name, e in registry.items()}, indent=2)
    lines = [f"{'name':<12} {'architecture':<12} {'checkpoint':<50} reference accuracy"]
    for name, e in registry.items():
        ref = f"{e.reference['accuracy'] * 100:.1f} % ({e.reference['dataset']})" if e.reference else "-"
        lines.append(f"{name:<12} {e.model_type:<12} {e.hf_id:<50} {ref}")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    return run_click(command, argv, prog_name="edge-convert")


if __name__ == "__main__":
    sys.exit(main())
