"""OpenVINO IR export and calibrated int8 (`vitkit export --format openvino`, `vitkit optimize`): the written
files alone predict as the model does; damaged files and bad flags are one clear error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.deploy import export_openvino, optimize_model
from vitkit.errors import CheckpointError, ConfigError
from vitkit.export import verify_sizes
from vitkit.graphmodel import StandIn, description_path, load_graph_model
from vitkit.processor import ImageProcessor, sample_photos


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    return vitkit.create_model("vit_digits").eval()


@pytest.fixture(scope="module")
def ir_fp32(digits, tmp_path_factory):
    return export_openvino(digits, tmp_path_factory.mktemp("ir") / "m.xml")


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, model.training


def test_openvino_ir_round_trip_equals_eager(digits, ir_fp32):
    path = ir_fp32.path
    assert path.is_file() and path.with_suffix(".bin").is_file() and description_path(path).is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    assert set(ir_fp32.checks) == set(verify_sizes(digits))
    h, w = digits.config.img_size
    assert ir_fp32.checks[(h, w)] <= 1e-4, ir_fp32.checks
    # other sizes resample the position embeddings in the graph, and OpenVINO's antialiased bicubic Resize is not
    # torch's (ONNX Runtime's is, within 1e-6): about 1e-3 of the outputs' scale
    assert ir_fp32.max_abs_diff <= 1e-2, ir_fp32.checks
    loaded = load_graph_model(path)  # the graph alone, no torch model
    assert isinstance(loaded, StandIn) and loaded.num_classes == digits.num_classes
    assert loaded.pretrained_cfg == digits.pretrained_cfg and loaded.config == digits.config
    x = ImageProcessor.from_model(digits)(sample_photos())
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), digits(x).numpy(), atol=1e-4, rtol=0)


def test_predict_from_the_ir_equals_predict_from_the_model(digits, ir_fp32):
    photos = sample_photos()
    before = _state(digits)
    got = vitkit.predict(photos, model=str(ir_fp32.path), top_k=3)
    want = vitkit.predict(photos, model=digits, top_k=3)
    assert len(got) == len(want) == len(photos)
    for g, w in zip(got, want):
        assert [p.index for p in g.top_k] == [p.index for p in w.top_k]
        assert [p.label for p in g.top_k] == [p.label for p in w.top_k]
        np.testing.assert_allclose([p.probability for p in g.top_k], [p.probability for p in w.top_k],
                                   atol=1e-4, rtol=0)
    after = _state(digits)
    assert after[1] == before[1] and all(torch.equal(after[0][k], v) for k, v in before[0].items())
    with pytest.raises(ConfigError, match="exported graph"):
        vitkit.predict(photos, model=str(ir_fp32.path), precision="int8", backend="onnxruntime")


def test_int8_ir_stays_close_to_fp32_on_real_photos(digits, tmp_path):
    result = export_openvino(digits, tmp_path / "q.xml", precision="int8", calibration=sample_photos())
    assert result.cosine >= 0.99
    data = json.loads(description_path(result.path).read_text())
    assert data["precision"] == "int8" and data["backend"] == "openvino"
    loaded = load_graph_model(result.path)
    x = ImageProcessor.from_model(digits)(sample_photos())
    with torch.no_grad():
        got, want = loaded(x), digits(x)
    assert float(torch.nn.functional.cosine_similarity(got, want, dim=1).min()) >= 0.99
    assert not torch.equal(got, want)  # quantized: not the fp32 graph


@pytest.mark.parametrize("damage", ["no-bin", "short-bin", "bad-xml", "no-json", "bad-json", "wrong-json"])
def test_damaged_ir_files_are_one_checkpoint_error(ir_fp32, tmp_path, damage):
    path = tmp_path / "m.xml"
    for src in (ir_fp32.path, ir_fp32.path.with_suffix(".bin"), description_path(ir_fp32.path)):
        shutil.copy(src, tmp_path / src.name)
    bin_, desc = path.with_suffix(".bin"), description_path(path)
    if damage == "no-bin":
        bin_.unlink()
    elif damage == "short-bin":
        bin_.write_bytes(bin_.read_bytes()[:1000])
    elif damage == "bad-xml":
        path.write_text(path.read_text()[:500])
    elif damage == "no-json":
        desc.unlink()
    elif damage == "bad-json":
        desc.write_text("{not json")
    else:
        desc.write_text(json.dumps({"format": "vitkit-graph", "version": 1, "num_classes": "ten"}))
    with pytest.raises(CheckpointError) as info:
        vitkit.predict(sample_photos()[:1], model=str(path))
    message = str(info.value)
    assert "m.xml" in message and "\n" not in message, message


def test_export_cli_writes_openvino_and_predict_runs_it(tmp_path, capsys):
    out = tmp_path / "d.xml"
    assert main(["export", "vit_digits", "--format", "openvino", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "openvino, fp32" in text and "max abs diff" in text and out.with_suffix(".bin").is_file()
    photo = tmp_path / "p.jpg"
    sample_photos()[0].save(photo)
    assert main(["predict", str(photo), "--model", str(out), "--top-k", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and len(rows[0]["predictions"]) == 2
    assert main(["export", "vit_digits", "--out", str(tmp_path / "x.onnx"), "--calibrate", str(tmp_path)]) == 2
    assert "--calibrate is for OpenVINO int8" in capsys.readouterr().err


def test_an_onnx_export_predicts_as_the_model(digits, tmp_path):
    result = vitkit.export_model(digits, tmp_path / "o.onnx")
    assert description_path(result.path).is_file()
    photos = sample_photos()
    got = vitkit.predict(photos, model=str(result.path), top_k=3)
    want = vitkit.predict(photos, model=digits, top_k=3)
    for g, w in zip(got, want):
        assert [p.index for p in g.top_k] == [p.index for p in w.top_k]
        np.testing.assert_allclose([p.probability for p in g.top_k], [p.probability for p in w.top_k],
                                   atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="output only") as info:  # its graph has the logits only
        vitkit.extract_features(photos, model=str(result.path))
    assert "\n" not in str(info.value)


@pytest.fixture()
def photo_dir(tmp_path):
    folder = tmp_path / "cal"
    folder.mkdir()
    from PIL import Image

    for i, img in enumerate(sample_photos()):
        for j in range(3):
            crop = img.crop((j * 60, j * 40, j * 60 + 320, j * 40 + 240))
            (crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if j == 1 else crop).save(folder / f"{i}_{j}.jpg")
    return folder


@pytest.mark.parametrize("backend,suffix", [("openvino", ".xml"), ("onnxruntime", ".onnx")])
def test_optimize_cli_writes_a_runnable_model_and_its_report(photo_dir, tmp_path, capsys, backend, suffix):
    out = tmp_path / f"o{suffix}"
    assert main(["optimize", "vit_digits", "--precision", "int8", "--calibrate", str(photo_dir), "--out", str(out),
                 "--backend", backend]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.with_name(f"o{suffix}.report.json").read_text())
    assert report["backend"] == backend and report["precision"] == "int8"
    files = 3 * len(sample_photos())
    held = sum(1 for i in range(files) if i % 5 == 4) or 1
    assert report["held_out"] == held and f"{files - held} image(s)" in report["calibration"], report
    assert report["mean_cosine"] >= 0.99 and report["top1_agreement"] == 1.0, report
    assert f"mean cosine {report['mean_cosine']:.4f}" in printed
    if backend == "onnxruntime":  # static QDQ: quantize/dequantize pairs with calibrated scales
        import onnx

        ops = {n.op_type for n in onnx.load(out).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "DynamicQuantizeLinear" not in ops, ops
    assert main(["predict", str(photo_dir / "0_0.jpg"), "--model", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["predictions"]


def test_optimize_without_calibration_says_what_it_uses(tmp_path, digits, capsys):
    out = tmp_path / "b.onnx"
    assert main(["optimize", "vit_digits", "--backend", "onnxruntime", "--out", str(out)]) == 0
    assert "no calibration images given" in capsys.readouterr().out.splitlines()[0]
    report = json.loads(out.with_name("b.onnx.report.json").read_text())
    assert "bundled sample photos" in report["calibration"] and report["held_out"] == 2 * len(sample_photos())
    assert report["mean_cosine"] >= 0.99
    before = _state(digits)
    result = optimize_model(digits, tmp_path / "c.onnx", backend="onnxruntime", precision="fp32")
    assert result.report["mean_cosine"] >= 0.9999 and result.report["top1_agreement"] == 1.0
    after = _state(digits)
    assert after[1] == before[1] and all(torch.equal(after[0][k], v) for k, v in before[0].items())


def test_optimize_bad_flags_are_one_line_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["--calibrate", str(tmp_path / "missing")], "does not exist"),
             (["--calibrate", str(empty)], "has 0 image file(s)"),
             (["--backend", "onnxruntime"], "writes a .onnx file"),
             (["--precision", "bf16", "--backend", "onnxruntime", "--out", str(tmp_path / "x.onnx")],
              "onnxruntime precision='bf16'")]
    for extra, expected in cases:
        argv = ["optimize", "vit_digits", "--out", str(tmp_path / "x.xml"), *extra]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("x.*"))


def test_features_from_the_ir_equal_the_models(digits, ir_fp32):
    photos = sample_photos()
    got = vitkit.extract_features(photos, model=str(ir_fp32.path))
    want = vitkit.extract_features(photos, model=digits)
    assert got.features.shape == want.features.shape == (len(photos), digits.num_features)
    np.testing.assert_allclose(got.features, want.features, atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="pool='default'"):
        vitkit.extract_features(photos, model=str(ir_fp32.path), pool="avg")


def test_an_xml_and_an_onnx_of_one_stem_keep_their_own_descriptions(digits, tmp_path):
    from vitkit.deploy import export_model
    from vitkit.runtime import pretrained_cfg_of

    onnx, xml = export_model(digits, tmp_path / "m.onnx").path, export_model(digits, tmp_path / "m.xml").path
    assert description_path(onnx) != description_path(xml)
    assert json.loads(description_path(onnx).read_text())["backend"] == "onnxruntime"
    x = ImageProcessor.from_model(digits)(sample_photos())
    with torch.no_grad():
        want = digits(x)
        feats = digits.forward_head(digits.forward_features(x), pre_logits=True)
    for path in (onnx, xml):
        assert (load_graph_model(path)(x) - want).abs().max() < 1e-4
        assert pretrained_cfg_of(path) == digits.pretrained_cfg
    assert (load_graph_model(xml).features(x) - feats).abs().max() < 1e-4
    with pytest.raises(ConfigError, match="output only, not its features"):
        load_graph_model(onnx).features(x)
    # another graph's description is refused by name, not read as this one's
    shutil.copy(description_path(xml), description_path(onnx))
    with pytest.raises(CheckpointError, match="backend='openvino' for a .onnx graph"):
        load_graph_model(onnx)


def test_a_description_of_the_older_name_is_read_when_it_is_this_graphs(digits, ir_fp32, tmp_path):
    path = tmp_path / "m.xml"
    shutil.copy(ir_fp32.path, path)
    shutil.copy(ir_fp32.path.with_suffix(".bin"), path.with_suffix(".bin"))
    shutil.copy(description_path(ir_fp32.path), tmp_path / "m.vitkit.json")  # as the first release named it
    x = ImageProcessor.from_model(digits)(sample_photos())
    with torch.no_grad():
        assert (load_graph_model(path)(x) - digits(x)).abs().max() < 1e-4
    onnx = tmp_path / "m.onnx"  # the shared older name holds the .xml's description: not the .onnx's
    onnx.write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="m.onnx.vitkit.json .* is missing"):
        load_graph_model(onnx)


def test_attention_maps_of_an_exported_graph_are_refused_by_name(ir_fp32):
    from PIL import Image

    from vitkit.attention import attention_map

    with pytest.raises(ConfigError, match="exported graph .*not its attention"):
        attention_map(Image.new("RGB", (40, 40)), str(ir_fp32.path))
