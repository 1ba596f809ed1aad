"""edge-bench's report and recommendation on synthetic result rows (no runs: fast, deterministic).

The rows follow the results.jsonl schema (study.py); tests/test_study.py checks that real runs
produce rows of this shape.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from edge_slm.runtime.bench import latency_stats
from edge_slm.common.errors import EdgeError
from edge_slm.bench.plan import source_identity
from edge_slm.bench.plots import PLOT_FILES, label_levels, pareto_front
from edge_slm.bench.report import speedups, write_report
from edge_slm.bench.store import ROW_SCHEMA, ROW_SCHEMA_VERSION
from edge_slm.bench.summary import Constraints, parse_accuracy, recommend, summarize
from edge_slm.common.documents import RANDOM_WEIGHTS_ACCURACY
from edge_slm.bench.cli import main

HOST = {"cpu_model": "Test CPU", "machine": "x86_64", "cores_logical": 2, "cores_usable": 2,
        "memory_total_mb": 4096.0, "os": "Linux-test", "board": None, "python": "3.11.0",
        "python_implementation": "CPython"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metadata(name: str, quant: str = "dynamic", random_weights: bool = False) -> dict:
    return {"model": {"name": name, "num_layers": 4, "hidden_size": 312}, "quantization": quant,
            "random_weights": random_weights, "source": f"{name} (owner/{name})",
            "tokenizer": {"max_seq_len": 128}, "weights": {"origin": "random" if random_weights else "/w.safetensors",
                                                          "seed": 0}}


def make_row(name: str, quant: str = "dynamic", *, kind: str = "artifact", threads: int = 2, p50: float = 10.0,
             peak_mb: float = 50.0, size_bytes: int = 5_000_000, accuracy=None, random_weights: bool = False,
             energy_mj=None, emulated: bool = True, mode: str = "tf.function", status: str = "ok",
             error=None, data="/data/dev.tsv", meter="um25c", host=None, other_cpu=0.01) -> dict:
    meta = metadata(name, quant, random_weights)
    latencies = [round(p50 * (0.8 + 0.4 * i / 98), 4) for i in range(99)]  # median exactly p50
    bench = {"inputs": "text", "runs": len(latencies), "warmup_runs": 10, "latency_ms": latency_stats(latencies),
             "latencies_ms": latencies, "init_ms": 12.0, "first_inference_ms": p50 * 3,
             "memory": {"peak_rss_mb": peak_mb, "rss_before_loop_mb": peak_mb - 1, "rss_after_loop_mb": peak_mb - 1,
                        "rss_growth_mb": 0.0}, "model_file_bytes": size_bytes}
    if accuracy is None and data:
        evaluation = {"status": RANDOM_WEIGHTS_ACCURACY, "examples": 872} if random_weights else None
    elif accuracy is not None:
        evaluation = {"status": "ok", "accuracy": accuracy, "correct": round(accuracy * 872), "examples": 872}
    else:
        evaluation = None
    energy = None
    if energy_mj is not None:
        energy = {"energy_per_inference_mj": energy_mj, "uncertainty_mj": energy_mj * 0.05,
                  "relative_uncertainty": 0.05, "needed_window_s": 40.0, "emulated": emulated, "partial": False}
    artifact = f"/models/{name}-{quant}.tflite"
    result = {"host": host or HOST, "evaluation": evaluation, "benchmark": bench, "energy": energy}
    if kind == "artifact":
        result.update(schema="edge-slm.run", backend={"name": "litert", "version": "2.3.0"},
                      model={"path": artifact, "metadata": meta})
        key, source = f"artifact|{artifact}|graph=0123456789abcdef|auto|threads={threads}", None
    else:
        bench.update(parameter_bytes=size_bytes * 4, import_ms=3000.0, model_file_bytes=None)
        result.update(schema="edge-slm.tf-baseline", framework={"tensorflow": "2.21.0", "mode": mode},
                      model={"artifact": artifact, "random_weights": random_weights, "metadata": meta},
                      agreement={"texts": 12, "mean_cosine": 0.9999, "label_agreement": 1.0,
                                 "max_abs_logit_diff": 0.01})
        source = source_identity(meta)
        key = f"tf-baseline|{source}|{mode}|threads={threads}"
    return {"schema": ROW_SCHEMA, "schema_version": ROW_SCHEMA_VERSION, "key": key, "kind": kind,
            "artifact": artifact, "threads": threads, "backend": "auto" if kind == "artifact" else "tensorflow",
            "mode": mode if kind != "artifact" else None, "source": source,
            "settings": {"runs": 100, "min_seconds": None, "warmup": 10, "data": data, "meter": meter,
                         "baseline_seconds": 3.0 if meter else None},
            "host": host or HOST, "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:10+00:00",
            "wall_s": 10.0, "status": status, "exit_code": 0 if status == "ok" else 3, "error": error,
            "other_cpu_share": other_cpu,
            "warnings": [], "result": result if status == "ok" else None}


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def random_study_rows() -> list:
    """The demo's situation: three random-weight models, their TF baselines, an emulated meter."""
    return [make_row("tinybert", p50=5.0, peak_mb=60, random_weights=True, energy_mj=8.0),
            make_row("tinybert", kind="tf-baseline", p50=17.0, peak_mb=700, random_weights=True, energy_mj=25.0),
            make_row("distilbert", p50=40.0, peak_mb=120, random_weights=True, energy_mj=60.0),
            make_row("distilbert", kind="tf-baseline", p50=72.0, peak_mb=1100, random_weights=True, energy_mj=110.0),
            make_row("mobilebert", p50=30.0, peak_mb=80, random_weights=True, energy_mj=45.0),
            make_row("mobilebert", kind="tf-baseline", p50=75.0, peak_mb=900, random_weights=True, energy_mj=120.0)]


# ---- the report ----------------------------------------------------------------------------------

def table_row(markdown: str, label: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))


def test_timings_of_an_emulated_cpu_are_labelled_in_the_report(tmp_path):
    emulated = dict(HOST, machine="aarch64", emulated=True,
                    emulator={"name": "qemu-aarch64", "version": "10.0.2", "cpu": "cortex-a72", "evidence": []})
    results = tmp_path / "results.jsonl"
    write_rows(results, [make_row("tinybert", host=emulated)])
    md = write_report(results).markdown.read_text()
    assert "**Emulated CPU** (qemu-aarch64 10.0.2, CPU cortex-a72)" in md
    assert "**emulated** by qemu-aarch64 10.0.2, CPU cortex-a72" in table_row(md, "CPU")
    assert "(emulated CPU)" in md.split("## Results", 1)[1]
    write_rows(results, [make_row("tinybert")])
    assert "emulated CPU" not in write_report(results).markdown.read_text().lower()


def test_random_weights_report_states_caveats_and_never_a_number(tmp_path):
    results = tmp_path / "results.jsonl"
    write_rows(results, random_study_rows())
    files = write_report(results)
    md = files.markdown.read_text()
    assert files.markdown == tmp_path / "report.md"
    # every caveat beside the numbers it qualifies
    assert "**Random weights**" in md and "**Emulated meter**" in md and "**Backend**" in md
    assert "litert 2.3.0" in md and "Test CPU" in md
    for label in ("tinybert dynamic, 2 thr", "distilbert dynamic, 2 thr", "tinybert TF fp32 tf.function, 2 thr"):
        row = table_row(md, label)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[3] == RANDOM_WEIGHTS_ACCURACY
        assert cells[-2].endswith("mJ (emulated)")
        assert "%" not in "|".join(cells[:-1])  # no accuracy figure of any kind (the last cell is other CPU %)
    # the speed-up of each artifact against its TF fp32 source model is stated
    assert "| tinybert dynamic, 2 thr | TF fp32 tf.function | 5.00 | 17.0 | **3.40x faster** |" in md
    assert "**1.80x faster**" in md and "**2.50x faster**" in md
    # no fake accuracy points: the accuracy plot becomes a latency chart that says why
    assert "No run has a measured accuracy (n/a (random weights))" in md
    assert files.recommendation["status"] == "ok" and "latency decides" in files.recommendation["reason"]
    assert all(s.accuracy is None for s in files.summaries)
    assert set(files.plots) == set(PLOT_FILES) - {"devices"}  # devices.png: only for studies on boards
    for path in files.plots.values():
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
        assert f"]({path.name})" in md


def test_plots_are_valid_images_with_titles_saying_what_they_show(tmp_path):
    import matplotlib.image

    results = tmp_path / "results.jsonl"
    write_rows(results, random_study_rows())
    files = write_report(results)
    for path in files.plots.values():
        height, width, _ = matplotlib.image.imread(path).shape
        assert width > 500 and height > 250
    # figure texts are PNG pixels; check the figures' own text through matplotlib instead
    from edge_slm.bench import plots

    import matplotlib.pyplot as plt

    summaries = [s for s in files.summaries if s.status == "ok"]
    colors = plots.model_colors(summaries)
    energy = plots.energy_figure(plt, summaries, colors)
    assert "EMULATED" in energy.axes[0].get_title() and "EMULATED" in energy.axes[0].get_xlabel()
    assert all("(emulated)" in t.get_text() for t in energy.axes[0].texts)
    latency = plots.accuracy_latency_figure(plt, summaries, colors)
    assert "accuracy not plotted: n/a (random weights)" in latency.axes[0].get_title()
    assert latency.axes[0].get_xlabel().startswith("latency per inference (ms)")
    assert not latency.axes[0].collections  # bars and marks only: no scatter of accuracy points
    plt.close("all")


def test_trained_weights_plot_accuracy_with_the_pareto_front(tmp_path):
    rows = [make_row("a", p50=5.0, accuracy=0.85), make_row("b", p50=10.0, accuracy=0.90),
            make_row("c", p50=20.0, accuracy=0.88),  # dominated by b
            make_row("d", p50=30.0, accuracy=0.92), make_row("d", kind="tf-baseline", p50=90.0, accuracy=0.925)]
    results = tmp_path / "results.jsonl"
    write_rows(results, rows)
    files = write_report(results)
    artifacts = [s for s in files.summaries if s.kind == "artifact"]
    assert [s.model for s in pareto_front(artifacts)] == ["a", "b", "d"]
    md = files.markdown.read_text()
    assert "Pareto front of the artifacts" in md
    assert "90.0 % (785/872)" in table_row(md, "b dynamic, 2 thr")
    assert files.plots["accuracy_latency"].read_bytes()[:8] == PNG_MAGIC


def test_numbers_of_close_latency_lines_go_on_separate_rows(tmp_path):
    """The study's plot: runs 7, 8 and 12 near 80 ms used to print their numbers on top of each other."""
    import matplotlib.pyplot as plt

    from edge_slm.bench import plots

    rows = [make_row("minilm", p50=6.3, accuracy=0.861), make_row("minilm", kind="tf-baseline", p50=30.3,
                                                                  accuracy=0.865)]
    rows += [make_row(name, quant, p50=p50, random_weights=True)
             for name, quant, p50 in (("tinybert", "dynamic", 3.2), ("mobilebert", "dynamic", 79.0),
                                      ("distilbert", "dynamic", 80.0), ("mobilebert", "int8", 81.5))]
    results = tmp_path / "results.jsonl"
    write_rows(results, rows)
    summaries = [s for s in write_report(results).summaries if s.status == "ok"]
    figure = plots.accuracy_latency_figure(plt, summaries, plots.model_colors(summaries))
    ax = figure.axes[0]
    figure.canvas.draw()
    line_numbers = [t for t in ax.texts if getattr(t, "xycoords", None) == ("data", "axes fraction")]
    assert len(line_numbers) == 4
    boxes = [t.get_window_extent() for t in line_numbers]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close("all")


def test_label_levels_drop_a_row_only_for_close_neighbours():
    assert label_levels([0.5, 0.52, 0.54, 0.7, 0.53]) == [0, 1, 2, 0, 3]
    assert label_levels([0.1, 0.2, 0.3]) == [0, 0, 0]
    assert label_levels([]) == []


def test_failed_runs_are_listed_and_kept_out_of_tables_and_recommendation(tmp_path):
    rows = [make_row("good", p50=5.0, accuracy=0.9),
            make_row("broken", status="failed", error="model.tflite is damaged: its graph does not match")]
    results = tmp_path / "results.jsonl"
    write_rows(results, rows)
    files = write_report(results)
    md = files.markdown.read_text()
    assert "## Failed runs" in md and "is damaged" in md and "1 run(s) failed" in md
    assert files.recommendation["best"]["label"] == "good dynamic, 2 thr"
    results_table = md.split("## Results")[1].split("##")[0]
    assert [line.split("|")[1].strip() for line in results_table.splitlines()
            if line.startswith("| ") and "---" not in line][1:] == ["good dynamic, 2 thr"]
    assert "| broken-dynamic.tflite, 2 thr |" in md


def test_last_row_of_a_run_wins_and_a_cut_off_last_line_is_skipped(tmp_path):
    failed = make_row("m", status="failed", error="timed out after 10 s and was killed")
    retried = make_row("m", p50=7.0)
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(failed) + "\n" + json.dumps(retried) + "\n" + json.dumps(retried)[:50])
    warnings = []
    files = write_report(results, warn=warnings.append)
    assert [s.status for s in files.summaries] == ["ok"]
    assert any("cut off" in w for w in warnings)


def test_runs_from_different_hosts_are_flagged(tmp_path):
    other = dict(HOST, cpu_model="Cortex-A76")
    results = tmp_path / "results.jsonl"
    write_rows(results, [make_row("a"), make_row("b", host=other)])
    assert "different hosts" in write_report(results).markdown.read_text()


def test_runs_measured_while_other_processes_ran_are_flagged(tmp_path):
    results = tmp_path / "results.jsonl"
    write_rows(results, [make_row("quiet", other_cpu=0.02), make_row("busy", other_cpu=0.45)])
    md = write_report(results).markdown.read_text()
    assert "**Busy host**: other processes used 45–45 % of the machine's CPU during 1 run(s) (busy dynamic" in md
    assert table_row(md, "busy dynamic, 2 thr").endswith("| **45 %** |")
    assert table_row(md, "quiet dynamic, 2 thr").endswith("| 2 % |")


def test_a_regenerated_report_leaves_no_stale_plot(tmp_path):
    results = tmp_path / "results.jsonl"
    write_rows(results, random_study_rows())
    assert "energy" in write_report(results).plots
    write_rows(results, [make_row("m", meter=None)])  # the same directory, now without a meter
    files = write_report(results)
    assert "energy" not in files.plots and not (tmp_path / "energy.png").exists()
    assert "No energy figure" in files.markdown.read_text()


def test_markdown_is_written_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ModuleNotFoundError
    results = tmp_path / "results.jsonl"
    write_rows(results, random_study_rows())
    files = write_report(results)
    assert files.plots == {} and "matplotlib is not installed" in files.markdown.read_text()
    assert not list(tmp_path.glob("*.png"))


def test_report_command_regenerates_into_another_directory(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    write_rows(results, random_study_rows())
    out = tmp_path / "elsewhere"
    assert main(["report", str(results), "-o", str(out), "--max-memory-mb", "100"]) == 0
    printed = capsys.readouterr().out
    assert (out / "report.md").is_file() and (out / "memory.png").is_file()
    assert "Constraints: peak RSS <= 100 MB." in (out / "report.md").read_text()
    assert "recommended: tinybert dynamic, 2 thr" in printed
    assert f"report: {out / 'report.md'}" in printed
    assert not (tmp_path / "report.md").exists()


def test_report_json_has_no_accuracy_number_for_random_weights(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    write_rows(results, random_study_rows())
    assert main(["report", str(results), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    for run in document["runs"]:
        assert run["accuracy"] is None and run["accuracy_text"] == RANDOM_WEIGHTS_ACCURACY
    assert not re.search(r"accuracy \d", json.dumps(document["recommendation"]))


@pytest.mark.parametrize("content, message", [
    ("", "holds no runs"),
    ('{"schema": "something else"}\n', "is not an edge-bench results row"),
    ("not json\n{}\n", "results.jsonl:1 is not valid JSON"),
])
def test_bad_results_files_are_one_line_errors(tmp_path, capsys, content, message):
    results = tmp_path / "results.jsonl"
    results.write_text(content)
    assert main(["report", str(results)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "hint:" in err


def test_report_of_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-bench report: error: results file not found") and "\n" not in err


# ---- the recommendation --------------------------------------------------------------------------

def summaries_of(*rows) -> list:
    return [summarize(row) for row in rows]


def test_most_accurate_artifact_that_meets_every_constraint_wins():
    runs = summaries_of(make_row("fast", p50=5.0, peak_mb=40, accuracy=0.86, energy_mj=5.0),
                        make_row("mid", p50=12.0, peak_mb=60, accuracy=0.90, energy_mj=12.0),
                        make_row("slow", p50=40.0, peak_mb=90, accuracy=0.92, energy_mj=40.0))
    rec = recommend(runs, Constraints(max_latency_ms=20, max_memory_mb=80, max_energy_mj=30, min_accuracy=0.85))
    assert rec["status"] == "ok" and rec["best"]["label"] == "mid dynamic, 2 thr"
    assert "highest accuracy (90.0 % (785/872))" in rec["reason"] and "2 of 3" in rec["reason"]
    verdict = {v["label"]: v for v in rec["verdicts"]}["slow dynamic, 2 thr"]
    assert not verdict["meets_all"] and len(verdict["failed"]) == 3
    # no constraints: simply the most accurate
    assert recommend(runs)["best"]["label"] == "slow dynamic, 2 thr"


def test_equal_accuracy_goes_to_the_faster_and_latency_stat_is_honoured():
    runs = summaries_of(make_row("a", p50=10.0, accuracy=0.9), make_row("b", p50=8.0, accuracy=0.9))
    assert recommend(runs)["best"]["label"] == "b dynamic, 2 thr"
    p99 = {s.model: s.latency["p99"] for s in runs}
    rec = recommend(runs, Constraints(max_latency_ms=(p99["a"] + p99["b"]) / 2, latency_stat="p99"))
    assert rec["best"]["label"] == "b dynamic, 2 thr" and "p99 latency <=" in rec["reason"]


def test_random_weights_rank_by_latency_and_cannot_meet_an_accuracy_floor():
    runs = [summarize(r) for r in random_study_rows()]
    rec = recommend(runs)
    assert rec["best"]["label"] == "tinybert dynamic, 2 thr"  # the TF baselines are never candidates
    rec = recommend(runs, Constraints(min_accuracy=0.8))
    assert rec["status"] == "none" and rec["unmet"] == ["accuracy >= 80 %"]
    assert "no artifact has a measured accuracy (n/a (random weights))" in rec["reason"]


def test_the_constraint_nothing_meets_is_named_with_the_nearest_figure():
    runs = summaries_of(make_row("a", p50=5.0, peak_mb=300), make_row("b", p50=50.0, peak_mb=40))
    rec = recommend(runs, Constraints(max_latency_ms=2))
    assert rec["status"] == "none"
    assert rec["reason"] == "nothing meets p50 latency <= 2 ms: the fastest is a dynamic, 2 thr at 5.00 ms."
    rec = recommend(runs, Constraints(max_latency_ms=10, max_memory_mb=100))
    assert rec["unmet"] == [] and "none meets all together" in rec["reason"]
    rec = recommend(runs, Constraints(max_energy_mj=10))
    assert "energy was not measured (run the study with --meter)" in rec["reason"]


def test_failed_runs_and_baselines_are_never_recommended():
    runs = summaries_of(make_row("x", status="failed", error="crashed (SIGSEGV)"),
                        make_row("x", kind="tf-baseline", p50=1.0, accuracy=0.99))
    rec = recommend(runs)
    assert rec["status"] == "none" and "no artifact run finished" in rec["reason"]


def test_speedup_pairs_each_artifact_with_its_own_source_at_the_same_threads():
    runs = summaries_of(make_row("m", p50=10.0, threads=1), make_row("m", p50=6.0, threads=2),
                        make_row("m", kind="tf-baseline", p50=30.0, threads=2),
                        make_row("other", kind="tf-baseline", p50=99.0, threads=1))
    pairs = speedups(runs)
    assert [(p["artifact"].threads, round(p["speedup"], 2)) for p in pairs] == [(2, 5.0)]


@pytest.mark.parametrize("text, value", [("0.88", 0.88), ("88%", 0.88), ("100%", 1.0), ("0", 0.0)])
def test_min_accuracy_takes_fractions_and_percentages(text, value):
    assert parse_accuracy(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["88", "1.5", "-0.1", "high"])
def test_ambiguous_or_bad_min_accuracy_is_refused(text):
    with pytest.raises(EdgeError, match="min-accuracy"):
        parse_accuracy(text)


# ---- issue 11: only measured claims, in words that read right ------------------------------------

def report_of(tmp_path, rows) -> str:
    tmp_path.mkdir(exist_ok=True)
    write_rows(tmp_path / "results.jsonl", rows)
    return write_report(tmp_path / "results.jsonl").markdown.read_text()


def test_backend_caveat_states_only_what_the_study_measured(tmp_path):
    md = report_of(tmp_path, random_study_rows())
    assert "4x" not in md and "was ~" not in md
    assert "this study ran one backend per artifact" in md

    litert = make_row("tinybert", p50=5.0)
    tflite_runtime = make_row("tinybert", p50=20.0)
    tflite_runtime.update(backend="tflite-runtime", key=tflite_runtime["key"].replace("|auto|", "|tflite-runtime|"))
    tflite_runtime["result"]["backend"] = {"name": "tflite-runtime", "version": "2.14.0"}
    md = report_of(tmp_path / "two", [litert, tflite_runtime])
    assert ("measured in this study: tflite-runtime 2.14.0 4.00x slower than litert 2.3.0 on tinybert-dynamic.tflite "
            "at 2 threads (p50 20.0 vs 5.00 ms)") in md


def test_a_slower_artifact_reads_slower(tmp_path):
    from edge_slm.bench.summary import speed_ratio_text

    assert speed_ratio_text(1.3) == "1.30x faster" and speed_ratio_text(0.76) == "1.32x slower"
    md = report_of(tmp_path, [make_row("tinybert", p50=20.0), make_row("tinybert", kind="tf-baseline", p50=15.0)])
    assert "**1.33x slower**" in md and "0.75x" not in md


def test_int8_figures_say_when_the_cpu_has_no_int8_dot_product(tmp_path):
    avx2_only = dict(HOST, cpu_model="AMD EPYC 7B12", cpu_features={"isa": "x86", "int8_flags": ["avx2"],
                                                                    "int8_dot_product": False})
    rows = [make_row("tinybert", "dynamic", host=avx2_only), make_row("tinybert", "fp32", host=avx2_only),
            make_row("tinybert", kind="tf-baseline", host=avx2_only)]
    md = report_of(tmp_path, rows)
    assert "| int8 instructions | avx2 — **no int8 dot-product instructions on this CPU** |" in md
    assert table_row(md, "tinybert dynamic, 2 thr (no int8 dot-product instructions on this CPU)")
    assert table_row(md, "tinybert fp32, 2 thr")  # fp32 is not marked
    assert "**No int8 dot-product path**" in md

    vnni = dict(HOST, cpu_features={"isa": "x86", "int8_flags": ["avx2", "avx512_vnni"], "int8_dot_product": True})
    md = report_of(tmp_path / "vnni", [make_row("tinybert", "dynamic", host=vnni)])
    assert "no int8 dot-product" not in md and "| int8 instructions | avx2, avx512_vnni |" in md


def test_accuracy_on_calibration_texts_is_marked_in_sample(tmp_path):
    row = make_row("minilm", "int8", accuracy=0.9)
    row["result"]["evaluation"]["calibrated_on_texts"] = 50
    assert summarize(row).accuracy_text == "90.0 % (785/872) IN-SAMPLE: calibrated on 50 of these texts"


def test_integer_against_fp32_is_measured_per_host(tmp_path):
    """make demo studies fp32 and dynamic artifacts: the report states the measured ratio, with the CPU's caveat."""
    avx2_only = dict(HOST, cpu_features={"isa": "x86", "int8_flags": ["avx2"], "int8_dot_product": False})
    rows = [make_row("tinybert", "fp32", p50=16.4, host=avx2_only),
            make_row("tinybert", "dynamic", p50=16.7, host=avx2_only)]
    md = report_of(tmp_path, rows)
    assert "## Integer against fp32 artifacts" in md
    assert ("- tinybert dynamic: 1.02x slower than fp32 at 2 threads (p50 16.7 vs 16.4 ms) "
            "(no int8 dot-product instructions on this CPU)") in md


def test_weights_read_per_inference_are_shown_with_the_caches_of_the_cpu(tmp_path):
    """Short requests are memory-bound once the weights outgrow the caches: the table shows the
    bytes and the traffic they need, and the notes the caches of the CPU the runs were on."""
    host = dict(HOST, cpu_caches={"L1d": 48 * 2 ** 10, "L2": 2 ** 20, "L3": 32 * 2 ** 20})
    row = make_row("distilbert", host=host)
    row["result"]["benchmark"]["work"] = {"macs_per_inference": 1.06e9, "gops_per_s": 400.0,
                                          "weight_bytes_per_inference": 43_100_000, "weight_gb_per_s": 8.0}
    results = tmp_path / "results.jsonl"
    write_rows(results, [row, make_row("tinybert")])
    md = write_report(results).markdown.read_text()
    assert table_row(md, "distilbert dynamic, 2 thr").split(" | ")[13] == "43.1 (8.0)"
    assert table_row(md, "tinybert dynamic, 2 thr").split(" | ")[13] == "—"  # not counted: no figure, never a guess
    assert "(Test CPU: L2 1 MB, L3 32 MB)" in md
