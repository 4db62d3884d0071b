"""Multi-label models: the flag travels through the save formats that can state it; predict thresholds
sigmoid scores."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli import main
from vitkit.errors import VitkitError
from vitkit.predict import format_predictions, predict

NAME = "test_multilabel_tiny"
BIAS = torch.tensor([2.0, -2.0, 0.5, -0.1])  # sigmoid: 0.881, 0.119, 0.622, 0.475, whatever the image


@pytest.fixture(scope="module", autouse=True)
def _registered():
    """A tiny registry entry for this module only (see test_lora.py)."""
    vitkit.register(vitkit.ModelEntry(
        name=NAME, config=dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=4),
        pretrained_cfg=vitkit.PretrainedCfg(input_size=(3, 32, 32), num_classes=4, label_names=None)))
    yield
    vitkit.registry._REGISTRY.pop(NAME)  # no public unregister


def _model(multi_label: bool = True) -> vitkit.VisionTransformer:
    model = vitkit.create_model(NAME)
    with torch.no_grad():  # a head that ignores the image, so the scores are known
        model.head.weight.zero_()
        model.head.bias.copy_(BIAS)
    model.pretrained_cfg = model.pretrained_cfg.replace(label_names=("cat", "dog", "sky", "car"),
                                                        multi_label=multi_label)
    return model.eval()


@pytest.fixture(scope="module")
def photo(photos, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("photo") / "chelsea.jpg"
    Image.fromarray(photos["chelsea"]).save(path, quality=95)
    return str(path)


def test_pretrained_cfg_field_defaults_off_and_round_trips():
    assert vitkit.PretrainedCfg().multi_label is False
    pcfg = vitkit.PretrainedCfg(multi_label=True)
    assert vitkit.PretrainedCfg.from_dict(json.loads(json.dumps(pcfg.to_dict()))).multi_label is True


@pytest.mark.parametrize("multi_label", [True, False])
@pytest.mark.parametrize("fmt", ["vitkit", "timm", "hf"])
def test_the_flag_travels_through_formats_that_can_state_it(tmp_path, fmt, multi_label):
    path = vitkit.save_pretrained(_model(multi_label), tmp_path / "m", format=fmt)
    assert vitkit.from_pretrained(path).pretrained_cfg.multi_label is multi_label


def test_hf_config_states_the_problem_type_for_transformers(tmp_path, transformers):
    path = vitkit.save_pretrained(_model(), tmp_path / "hf", format="hf")
    assert json.loads((path / "config.json").read_text())["problem_type"] == "multi_label_classification"
    assert transformers.AutoConfig.from_pretrained(path).problem_type == "multi_label_classification"
    plain = vitkit.save_pretrained(_model(False), tmp_path / "plain", format="hf")
    assert "problem_type" not in json.loads((plain / "config.json").read_text())


def test_timm_config_keeps_the_flag_where_timm_still_reads_the_file(tmp_path, timm):
    from timm.models._hub import _parse_model_cfg
    from timm.models._pretrained import PretrainedCfg

    path = vitkit.save_pretrained(_model(), tmp_path / "timm", format="timm")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["multi_label"] is True and "multi_label" not in cfg["pretrained_cfg"]
    pretrained_cfg, _, _ = _parse_model_cfg(cfg, {})
    assert PretrainedCfg(**pretrained_cfg).num_classes == 4  # timm rejects unknown keys in pretrained_cfg


def test_npz_cannot_state_it(tmp_path):
    path = vitkit.save_pretrained(_model(), tmp_path / "m.npz", format="npz")
    assert vitkit.from_pretrained(path).pretrained_cfg.multi_label is False


def test_predict_thresholds_sigmoid_scores(photo):
    [result] = predict(photo, _model(), top_k=3, threshold=0.5)
    expected = torch.sigmoid(BIAS)
    assert [p.label for p in result.top_k] == ["cat", "sky", "car"]
    assert [p.probability for p in result.top_k] == pytest.approx(expected[[0, 2, 3]].tolist(), abs=1e-6)
    assert [p.label for p in result.labels] == ["cat", "sky"] and result.threshold == 0.5
    assert [p.label for p in predict(photo, _model(), threshold=0.1)[0].labels] == ["cat", "sky", "car", "dog"]
    assert "labels above 0.5: cat (88.08%), sky (62.25%)" in format_predictions([result])
    [single] = predict(photo, _model(multi_label=False), top_k=4)
    assert single.labels is None and sum(p.probability for p in single.top_k) == pytest.approx(1.0)
    with pytest.raises(VitkitError, match="threshold=1.5"):
        predict(photo, _model(), threshold=1.5)


def test_cli_threshold(capsys, photo, tmp_path):
    vitkit.save_pretrained(_model(), tmp_path / "m")
    assert main(["predict", photo, "--model", str(tmp_path / "m"), "--threshold", "0.7", "--json"]) == 0
    [out] = json.loads(capsys.readouterr().out)
    assert [p["label"] for p in out["labels"]] == ["cat"] and out["threshold"] == 0.7
    assert len(out["predictions"]) == 4
    with pytest.raises(SystemExit) as exit_:  # a usage error: argparse's one line and status 2
        main(["predict", photo, "--model", str(tmp_path / "m"), "--threshold", "-1"])
    assert exit_.value.code == 2
