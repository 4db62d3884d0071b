"""timm habits around published weights: ``create_model(name, pretrained=True)`` through the Hugging Face cache
(offline, from a cache laid out exactly as huggingface_hub lays it out), pretrained tags, `--weights pretrained`,
and one clear line when the weights are not cached and cannot be downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from _cli import run_cli
from vitkit.registry import pretrained_source

ARCH = "vit_tiny_patch16_224"
REPO = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _add_to_cache(cache, repo: str, files: dict[str, bytes]) -> None:
    """models--org--name/{blobs/<sha256>, snapshots/<rev>/<file> -> ../../blobs/<sha256>, refs/main}."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True)
    (root / "snapshots" / REVISION).mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REVISION)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (root / "blobs" / digest).write_bytes(data)
        os.symlink(f"../../blobs/{digest}", root / "snapshots" / REVISION / name)


@pytest.fixture(scope="module")
def hub(timm, tmp_path_factory):
    """A Hugging Face cache holding timm's vit_tiny_patch16_224 (random weights) as timm publishes it."""
    from safetensors.torch import save_file

    tmp = tmp_path_factory.mktemp("hf")
    ref = timm.create_model(ARCH, pretrained=False).eval()
    weights = tmp / "w.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(weights))
    config = {"architecture": ARCH, "num_classes": 1000, "num_features": 192,
              "pretrained_cfg": {"tag": "augreg_in21k_ft_in1k", "input_size": [3, 224, 224], "crop_pct": 0.9,
                                 "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3}}
    cache = tmp / "hub"
    _add_to_cache(cache, REPO, {"config.json": json.dumps(config).encode(), "model.safetensors": weights.read_bytes()})
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    np.save(tmp / "x.npy", x.numpy())
    with torch.no_grad():
        logits = ref(x).numpy()
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp / "home")}
    return {"tmp": tmp, "logits": logits, "env": env, "ref": ref}


LIBRARY = r"""
import json, sys
import numpy as np, torch
import vitkit
x = torch.from_numpy(np.load(sys.argv[1]))
out = {}
for name in ("vit_tiny_patch16_224", "vit_tiny_patch16_224.augreg_in21k_ft_in1k"):
    model = vitkit.create_model(name, pretrained=True).eval()
    with torch.no_grad():
        np.save(sys.argv[2] + name + ".npy", model(x).numpy())
    out[name] = {"tag": model.pretrained_cfg.tag, "timm_name": model.pretrained_cfg.timm_name,
                 "model_name": model.model_name}
try:
    vitkit.create_model("vit_small_patch16_224", pretrained=True)
except vitkit.VitkitError as exc:
    out["missing"] = str(exc)
print(json.dumps(out))
"""


def test_pretrained_true_reads_the_hub_cache_offline(hub):
    tmp = hub["tmp"]
    res = subprocess.run([sys.executable, "-c", LIBRARY, str(tmp / "x.npy"), str(tmp / "out_")], capture_output=True,
                         text=True, timeout=300, env={**os.environ, **hub["env"]})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    for name in ("vit_tiny_patch16_224", "vit_tiny_patch16_224.augreg_in21k_ft_in1k"):
        np.testing.assert_allclose(np.load(tmp / f"out_{name}.npy"), hub["logits"], atol=1e-5, rtol=0)
        assert out[name] == {"tag": "augreg_in21k_ft_in1k", "timm_name": ARCH, "model_name": ARCH}
    missing = out["missing"]
    assert "\n" not in missing and "not in the Hugging Face cache" in missing
    assert "`hf download timm/vit_small_patch16_224.augreg_in21k_ft_in1k`" in missing


def test_cli_weights_pretrained_uses_the_cache(hub, photos):
    img = hub["tmp"] / "cat.jpg"
    Image.fromarray(photos["chelsea"]).save(img)
    res = run_cli("predict", str(img), "--model", ARCH, "--weights", "pretrained", "--json", "--top-k", "3",
                  env=hub["env"])
    assert res.returncode == 0, res.stderr
    assert "RANDOM" not in res.stderr
    expected = vitkit.predict(img, vitkit.create_model(ARCH, pretrained=_cached_folder(hub)), top_k=3)[0]
    assert [p["index"] for p in json.loads(res.stdout)[0]["predictions"]] == [p.index for p in expected.top_k]


def _cached_folder(hub):
    cache = Path(hub["env"]["HF_HUB_CACHE"])
    return cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / REVISION


def test_default_tags_are_timms(timm):
    from timm.models import get_pretrained_cfg

    for name in vitkit.list_models():
        theirs = get_pretrained_cfg(name) if name != "vit_digits" else None
        ours = vitkit.get_entry(name).pretrained_cfg
        if theirs is not None and theirs.hf_hub_id:
            assert pretrained_source(name) == f"hf-hub:{theirs.hf_hub_id}", name
            assert ours.tag == theirs.tag, name


def test_tags_and_unknown_names():
    model = vitkit.create_model("deit_tiny_patch16_224.fb_in1k", depth=1)
    assert model.pretrained_cfg.tag == "fb_in1k" and model.model_name == "deit_tiny_patch16_224"
    assert vitkit.create_model("vit_digits", pretrained=False).model_name == "vit_digits"  # timm's False
    with pytest.raises(vitkit.UnknownModelError, match="Did you mean"):
        vitkit.create_model("vit_tiny_patch16_225.augreg")
    with pytest.raises(vitkit.CheckpointError, match="no published weights"):
        vitkit.create_model("vit_digits", pretrained=True)


def test_models_matches_by_substring_and_says_when_nothing_does():
    assert vitkit.list_models("deit") == sorted(n for n in vitkit.list_models() if "deit" in n)
    assert vitkit.list_models("vit_base_*16_siglip_[23]*") == [
        "vit_base_patch16_siglip_224", "vit_base_patch16_siglip_256", "vit_base_patch16_siglip_384"]
    res = run_cli("models", "deit")
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 6
    res = run_cli("models", "nosuchmodel")
    assert res.returncode == 1 and "no model name matches 'nosuchmodel'" in res.stderr


HF_REPO = "google/vit-tiny-random"  # a transformers folder under a Google-style repository id


@pytest.fixture(scope="module")
def hf_repo(hub, transformers):
    """A transformers ViTForImageClassification (random weights) in the same cache, as save_pretrained writes it."""
    from test_weights_hf import SMALL

    ref = transformers.ViTForImageClassification(transformers.ViTConfig(**SMALL, num_labels=4)).eval()
    folder = hub["tmp"] / "hf_vit"
    ref.save_pretrained(folder)
    cache = Path(hub["env"]["HF_HUB_CACHE"])
    _add_to_cache(cache, HF_REPO, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    np.save(hub["tmp"] / "x32.npy", x.numpy())
    with torch.no_grad():
        logits = ref(pixel_values=x).logits.numpy()
    return {"logits": logits}


HUB_NAMES = r"""
import json, sys
import numpy as np, torch
import vitkit
from vitkit.bench import import_peer
tmp = sys.argv[1]
out = {}
x = torch.from_numpy(np.load(tmp + "/x.npy"))
# timm's spelling of a model repository: the architecture, class count and preprocessing from its config.json
model = vitkit.create_model("hf-hub:" + sys.argv[2], pretrained=True).eval()
with torch.no_grad():
    np.save(tmp + "/hub_name.npy", model(x).numpy())
random = vitkit.create_model("hf-hub:" + sys.argv[2])
out["pretrained"] = {"name": model.model_name, "hf_hub_id": model.pretrained_cfg.hf_hub_id,
                     "tag": model.pretrained_cfg.tag, "crop_pct": model.pretrained_cfg.crop_pct,
                     "same_weights_without_pretrained": bool(torch.equal(random.pos_embed, model.pos_embed))}
timm = import_peer("timm")
ref = timm.create_model("hf-hub:" + sys.argv[2], pretrained=True)
out["timm"] = {"name": ref.default_cfg["architecture"], "hf_hub_id": ref.pretrained_cfg["hf_hub_id"],
               "tag": ref.pretrained_cfg["tag"], "crop_pct": ref.pretrained_cfg["crop_pct"]}
# transformers' spelling: a bare repository id, looked up in the cache
x32 = torch.from_numpy(np.load(tmp + "/x32.npy"))
with torch.no_grad():
    np.save(tmp + "/repo_id.npy", vitkit.from_pretrained(sys.argv[3]).eval()(x32).numpy())
for call in ("from_pretrained", "load_model"):
    try:
        getattr(vitkit, call)("google/vit-base-patch16-224")
    except vitkit.VitkitError as exc:
        out[call] = str(exc)
try:
    vitkit.create_model("hf-hub:" + sys.argv[3])
except vitkit.ConfigError as exc:
    out["not_timm"] = str(exc)
print(json.dumps(out))
"""


def test_hub_names_and_repo_ids_read_the_cache_as_timm_and_transformers_do(hub, hf_repo):
    tmp = hub["tmp"]
    res = subprocess.run([sys.executable, "-c", HUB_NAMES, str(tmp), REPO, HF_REPO], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **hub["env"]})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    np.testing.assert_allclose(np.load(tmp / "hub_name.npy"), hub["logits"], atol=1e-5, rtol=0)
    mine = out["pretrained"]
    assert {k: mine[k] for k in out["timm"]} == out["timm"] == {
        "name": ARCH, "hf_hub_id": REPO, "tag": "augreg_in21k_ft_in1k", "crop_pct": 0.9}
    assert not mine["same_weights_without_pretrained"]  # as in timm: the repository's weights only when asked
    np.testing.assert_allclose(np.load(tmp / "repo_id.npy"), hf_repo["logits"], atol=1e-5, rtol=0)
    for call in ("from_pretrained", "load_model"):
        message = out[call]
        assert "\n" not in message and "holds no repository 'google/vit-base-patch16-224'" in message, message
        assert "`hf download google/vit-base-patch16-224`" in message
        assert "'hf-hub:google/vit-base-patch16-224'" in message
    assert "vitkit.from_pretrained('hf-hub:google/vit-tiny-random')" in out["not_timm"]


def test_cli_model_takes_a_cached_repo_id_and_says_when_it_is_not_cached(hub, hf_repo, photos, monkeypatch, capsys):
    from huggingface_hub import constants

    from vitkit.cli import main

    monkeypatch.setattr(constants, "HF_HUB_CACHE", hub["env"]["HF_HUB_CACHE"])  # as HF_HUB_CACHE set at start-up
    img = hub["tmp"] / "coffee.jpg"
    Image.fromarray(photos["coffee"]).save(img)
    assert main(["predict", str(img), "--model", HF_REPO, "--json", "--top-k", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["predictions"]) == 2
    assert main(["predict", str(img), "--model", "google/vit-base-patch16-224"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hf download google/vit-base-patch16-224" in err and "hf-hub:" in err
