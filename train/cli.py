"""`edge-train`: a thin click shell over `edge_slm.train` (job.train and compare.compare).

    edge-train MODEL --train FILE --dev FILE -o DIR [--epochs N | --max-steps N] [...]
    edge-train --compare MODEL... [--train FILE] --steps N [--batch-size 16] [--seq-len 128] [-o DIR]

Exit codes (README "Conventions"): 0 done, 2 bad input, 130 interrupted by Ctrl-C or SIGTERM (the
last complete checkpoint stays in DIR).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from edge_slm.common.cli import CONTEXT_SETTINGS, FINITE, output_options, run_click
from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY
from edge_slm.common.errors import EXIT_INTERRUPTED, EdgeError
from edge_slm.common.files import prepare_out_dir, write_json

from .checkpoints import last_checkpoint
from .compare import compare
from .job import train
from .settings import COMPARE_BATCH_SIZE, COMPARE_SEQ_LEN, DEFAULT_COMPARE_STEPS, DEFAULT_EVAL_EVERY, REPORT_FILE

COMPARE_REPORT_FILE = "train_compare.json"


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("models", nargs=-1, metavar="MODEL...")
@click.option("--train", "train_path", help="Labelled training texts: TSV/CSV/JSONL with text and label columns.")
@click.option("--dev", "dev_path", help="Labelled dev texts (same labels) for accuracy and loss per evaluation.")
@click.option("-o", "--out-dir", help="Checkpoint folder to write (for --compare: where the report goes; default .).")
@click.option("--epochs", type=int, default=1, show_default=True, help="Passes over the training data.")
@click.option("--max-steps", "--steps", "max_steps", type=int,
              help="Stop after this many optimizer steps (overrides --epochs; --compare: default "
                   f"{DEFAULT_COMPARE_STEPS}).")
@click.option("--batch-size", type=int, help=f"Examples per step (default 32; --compare {COMPARE_BATCH_SIZE}).")
@click.option("--learning-rate", "--lr", "learning_rate", type=FINITE, default=3e-5, show_default=True,
              help="Peak learning rate (Adam).")
@click.option("--warmup-ratio", type=FINITE, default=0.1, show_default=True,
              help="Share of the steps with a linearly rising learning rate; then linear decay to 0.")
@click.option("--seq-len", type=int,
              help=f"Tokens per example (default: the registry's, else 128; --compare {COMPARE_SEQ_LEN}).")
@click.option("--max-train-examples", type=int, help="Train on a seeded random subset of at most N examples.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Fixes init, subset, data order and dropout.")
@click.option("--eval-every", type=int, default=DEFAULT_EVAL_EVERY, show_default=True,
              help="Evaluate on --dev and write a checkpoint every N steps (and at the end).")
@click.option("--target-accuracy", type=FINITE, help="Report the time to reach this dev accuracy (a fraction).")
@click.option("--text-column", help="Text column name or 0-based index (default: auto).")
@click.option("--label-column", help="Label column name or index (default: auto).")
@click.option("--random-init", is_flag=True, help="Random weights (architecture from the registry or config.json).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in -o from its last checkpoint.")
@click.option("--compare", "compare_mode", is_flag=True,
              help="Compare the training speed of MODEL... (random init, identical data and settings).")
@click.option("--registry", "registry_files", multiple=True, help="Extra registry TOML file(s) (repeatable).")
@output_options
def command(models, train_path, dev_path, out_dir, epochs, max_steps, batch_size, learning_rate, warmup_ratio, seq_len,
            max_train_examples, seed, eval_every, target_accuracy, text_column, label_column, random_init, resume,
            compare_mode, registry_files, as_json, quiet):
    """Fine-tune a BERT-family classifier (registry name, checkpoint directory or hub id) on the host,
    with training-speed figures; the output folder is a checkpoint edge-convert takes as is."""
    if compare_mode:
        for flag, given in (("--dev", dev_path), ("--resume", resume), ("--target-accuracy", target_accuracy)):
            if given:
                raise EdgeError(f"{flag} does not apply to --compare", "--compare measures training speed only")
        report = compare(models, train_path, steps=DEFAULT_COMPARE_STEPS if max_steps is None else max_steps,
                         batch_size=_default(batch_size, COMPARE_BATCH_SIZE), seq_len=_default(seq_len, COMPARE_SEQ_LEN),
                         learning_rate=learning_rate, seed=seed, max_train_examples=max_train_examples,
                         text_column=text_column, label_column=label_column, registry_files=registry_files,
                         show_progress=not quiet)
        path = _write_compare_report(report, out_dir or ".")
        click.echo(json.dumps(report, indent=2) if as_json else render_compare(report) + f"\nreport     {path}")
        return
    if len(models) != 1:
        raise EdgeError("edge-train trains one MODEL" if models else "no MODEL given",
                        "pass one registry name, checkpoint directory or hub id (several: --compare)")
    if not out_dir:
        raise EdgeError("no output directory", "pass -o DIR: the checkpoint folder edge-train writes")
    try:
        report = train(models[0], train_path, dev_path, out_dir, epochs=epochs, max_steps=max_steps,
                       batch_size=_default(batch_size, 32), learning_rate=learning_rate, warmup_ratio=warmup_ratio,
                       seq_len=seq_len, max_train_examples=max_train_examples, seed=seed, eval_every=eval_every,
                       target_accuracy=target_accuracy, random_init=random_init, resume=resume,
                       text_column=text_column, label_column=label_column, registry_files=registry_files,
                       show_progress=not quiet)
    except KeyboardInterrupt:
        checkpoint = last_checkpoint(out_dir)
        if checkpoint is None:
            raise EdgeError("interrupted before the first checkpoint", "start again (without --resume)",
                            exit_code=EXIT_INTERRUPTED) from None
        raise EdgeError(f"interrupted; {out_dir} holds the model of the last complete checkpoint ({checkpoint.name})",
                        "run the same command with --resume to continue", exit_code=EXIT_INTERRUPTED) from None
    click.echo(json.dumps(report, indent=2) if as_json else render_train(report))


def _default(value, default):
    """The option's value unless it was not given (0 is a value, and refused by the library)."""
    return default if value is None else value


def _write_compare_report(report: dict, out_dir) -> Path:
    path = prepare_out_dir(out_dir) / COMPARE_REPORT_FILE
    write_json(path, report)
    return path


# ---- rendering ---------------------------------------------------------------------------------------

def _accuracy(entry: Optional[dict]) -> str:
    if entry is None:
        return "-"
    if entry["dev_accuracy"] == RANDOM_WEIGHTS_ACCURACY:
        return RANDOM_WEIGHTS_ACCURACY
    return f"{entry['dev_accuracy'] * 100:.2f} % ({entry['dev_correct']}/{entry['dev_examples']})"


def _number(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def render_train(report: dict) -> str:
    m, d, s, sp, t = report["model"], report["data"], report["settings"], report["speed"], report["time"]
    lines = [
        f"trained    {m['name']} ({m['init']} init, {m['parameters'] / 1e6:.1f} M parameters) on "
        f"{d['train']['examples']} examples: {report['progress']['step']} steps of {s['batch_size']}, seq {s['seq_len']}, "
        f"{report['progress']['step'] / s['steps_per_epoch']:.2f} epochs",
        f"speed      {_number(sp['examples_per_s'], '.1f')} examples/s, {_number(sp['tokens_per_s'], '.0f')} tokens/s "
        f"({_number(sp['padded_tokens_per_s'], '.0f')} with padding), {_number(sp['seconds_per_epoch'], '.1f')} s/epoch "
        f"(steady state, first {sp['warmup_steps_excluded']} steps excluded)",
        f"time       {t['wall_seconds']:.1f} s wall: {t['setup_seconds']:.1f} s set-up, {t['train_seconds']:.1f} s "
        f"training, {t['eval_seconds']:.1f} s evaluating, {t['checkpoint_seconds']:.1f} s checkpointing",
        f"memory     peak RSS {sp['peak_rss_mb']:.0f} MB",
        f"{'step':>10} {'epoch':>7} {'train loss':>11} {'dev loss':>9}  dev accuracy",
    ]
    for e in report["evaluations"]:
        lines.append(f"{e['step']:>10} {e['epoch']:>7.2f} {e['train_loss']:>11.4f} {e['dev_loss']:>9.4f}  {_accuracy(e)}")
    target = report["time_to_target"]
    if target is not None:
        if target["reached"] is True:
            outcome = (f"reached at step {target['step']} after {target['train_seconds']:.1f} s of training "
                       f"({target['wall_seconds']:.1f} s wall)")
        else:
            outcome = RANDOM_WEIGHTS_ACCURACY if target["reached"] == RANDOM_WEIGHTS_ACCURACY else "not reached"
        lines.append(f"target     {target['target_accuracy'] * 100:.1f} % dev accuracy: {outcome}")
    lines.append(f"output     {report['output']['directory']} ({REPORT_FILE}); next: {report['output']['convert']}")
    return "\n".join(lines)


def render_compare(report: dict) -> str:
    s = report["settings"]
    lines = [f"training speed: {s['steps']} steps of batch {s['batch_size']} at seq {s['seq_len']}, same data "
             f"({report['data']['source']}), random init; first {s['speed_warmup_steps']} steps excluded",
             f"{'model':<14} {'params M':>8} {'examples/s':>10} {'tokens/s':>9} {'ms/step':>8} {'peak RSS MB':>11}"]
    for r in report["results"]:
        sp = r["speed"]
        lines.append(f"{r['model']:<14} {r['parameters'] / 1e6:>8.1f} {_number(sp['examples_per_s'], '.1f'):>10} "
                     f"{_number(sp['tokens_per_s'], '.0f'):>9} {_number(sp['step_ms_median'], '.0f'):>8} "
                     f"{r['peak_rss_mb']:>11.0f}")
    lines.append(f"accuracy   {report['accuracy']}; fastest: {report['fastest'] or 'n/a'}")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    return run_click(command, argv, prog_name="edge-train")

