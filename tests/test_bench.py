"""vitkit bench: every runtime on the same weights, outputs checked, timed interleaved, reported as a table."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

import vitkit
from vitkit.bench import (
    FLOORS,
    REFERENCE,
    flops_per_image,
    format_report,
    gemm_peak,
    import_peer,
    interleaved_times,
    run_bench,
)
from vitkit.cli import main


def test_flops_of_vit_b16_match_the_published_17_6_gmacs():
    model = SimpleNamespace(config=vitkit.get_entry("vit_base_patch16_224").build_config())
    assert flops_per_image(model) / 2e9 == pytest.approx(17.56, abs=0.05)


def test_gemm_peak_is_a_rate():
    assert 0 < gemm_peak(torch.float32, 64, 64, 64, budget_s=0.05) < 1e5  # GFLOP/s (a loaded machine is slow)


def test_a_peer_that_does_not_import_is_skipped_with_its_reason(tmp_path, monkeypatch, caplog):
    (tmp_path / "broken_peer.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_peer("broken_peer") is None and import_peer("no_such_peer_library") is None
    assert "broken_peer is installed but does not import here (operator torchvision::nms does not exist)" \
        in caplog.text
    assert import_peer("json") is sys.modules["json"]


def test_interleaved_times_rotates_and_warms_up():
    calls = []
    times = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, iters=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=32).eval()
    return run_bench(model, batch_sizes=(1, 2), iters=2, warmup=1, compile_=False)


def test_bench_runs_every_runtime_on_the_same_weights(report):
    labels = {r.label for r in report.rows}
    assert {REFERENCE, "transformers eager", "vitkit eager", "vitkit auto (onnxruntime)",
            "onnxruntime (plain)", "onnxruntime int8 (plain)"} <= labels
    assert {r.batch_size for r in report.rows} == {1, 2}
    for r in report.rows:
        assert r.cosine >= FLOORS[r.precision], r  # outputs agree with eager fp32 vitkit
        assert len(r.seconds) == 2 and r.images_per_s > 0
    assert all(r.max_abs_diff < 1e-4 for r in report.rows if r.label in (REFERENCE, "vitkit eager")
               and r.precision == "fp32")


def test_report_table_says_where_it_ran(report):
    text = format_report(report)
    assert torch.backends.cpu.get_cpu_capability() in text and "native bf16" in text and "VNNI" in text
    assert "GEMM peak" in text and "| 2 | timm eager | fp32 |" in text and "1.00x" in text
    if not report.cpu.native_bf16:
        assert "bf16 not run" in text and not any(r.precision == "bf16" for r in report.rows)


def test_bench_cli(capsys):
    assert main(["bench", "vit_tiny_patch16_224", "--img-size", "32", "--batch-size", "1", "--iters", "1",
                 "--no-compile", "--no-peers"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vitkit bench vit_tiny_patch16_224 --batch-size 1 --iters 1")
    assert "| 1 | vitkit eager | int8 |" in out


def test_bench_times_optimized_files_beside_the_model_they_came_from(tmp_path, capsys):
    """`vitkit bench MODEL --optimized FILE...`: each graph file is a row, checked against MODEL's eager fp32."""
    from vitkit.deploy import export_model

    torch.manual_seed(0)
    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=32, num_classes=5).eval()
    vitkit.save_pretrained(model, tmp_path / "m")
    xml = export_model(model, tmp_path / "m.xml").path
    onnx = export_model(model, tmp_path / "m.onnx", precision="int8").path
    assert main(["bench", str(tmp_path / "m"), "--batch-size", "2", "--iters", "1", "--warmup", "0",
                 "--no-compile", "--no-peers", "--optimized", str(xml), str(onnx)]) == 0
    out = capsys.readouterr().out
    assert f"--optimized {xml} {onnx}" in out.splitlines()[0]
    rows = {line.split(" | ")[1]: line.split(" | ") for line in out.splitlines() if line.startswith("| 2 |")}
    assert rows["optimized m.xml (openvino)"][2] == "fp32" and float(rows["optimized m.xml (openvino)"][7]) > 0.9999
    assert rows["optimized m.onnx (onnxruntime)"][2] == "int8"
    assert float(rows["optimized m.onnx (onnxruntime)"][7]) >= FLOORS["int8"]
    assert "below the" not in out  # both agree with the model they were written from


def test_bench_refuses_a_graph_as_the_model_and_a_file_of_another_size(tmp_path, capsys):
    from vitkit.deploy import export_model

    small = export_model(vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=32).eval(),
                         tmp_path / "s.onnx").path
    assert main(["bench", str(small)]) == 2
    assert "--optimized" in capsys.readouterr().err
    code = main(["bench", "vit_tiny_patch16_224", "--img-size", "64", "--iters", "1", "--optimized", str(small)])
    err = capsys.readouterr().err
    assert code == 2 and "takes inputs of (3, 32, 32)" in err and len(err.strip().splitlines()) == 1
