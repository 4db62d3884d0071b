"""Saved datasets a stranger wrote: data files stay in the folder, image cells never fetch, hang or escape."""

from __future__ import annotations

import http.server
import json
import logging
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from vitkit.cli import main
from vitkit.data.hfdatasets import load_hf_splits, read_hf_dataset
from vitkit.errors import DataError

datasets = pytest.importorskip("datasets")
NAMES = ["a", "b"]


def _save(folder: Path, images: list, labels: list, *, label_feature=None) -> Path:
    feats = datasets.Features({"image": datasets.Image(),
                               "label": label_feature or datasets.ClassLabel(names=NAMES)})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=feats).save_to_disk(str(folder))
    return folder


def _save_paths(folder: Path, cells: list, labels: list) -> Path:
    """A dataset whose image cells hold paths only, written without datasets touching them (as a stranger could)."""
    struct = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    feats = datasets.Features({"image": struct, "label": datasets.ClassLabel(names=NAMES)})
    rows = [{"bytes": None, "path": c} if isinstance(c, str) else {"bytes": _png(c), "path": None} for c in cells]
    datasets.Dataset.from_dict({"image": rows, "label": labels}, features=feats).save_to_disk(str(folder))
    info = json.loads((folder / "dataset_info.json").read_text())
    info["features"]["image"] = {"_type": "Image"}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _loads(source) -> list:
    return [source.images.load(i) for i in range(len(source.images))]


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        self.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_image_cells_holding_urls_fifos_or_outside_paths_are_skipped_and_nothing_is_fetched(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Counter)
    server.timeout = 0.5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        outside = tmp_path / "outside.png"
        Image.new("RGB", (8, 8)).save(outside)
        os.mkfifo(tmp_path / "pipe.png")
        url = f"http://127.0.0.1:{server.server_address[1]}/x.png"
        cells = [Image.new("RGB", (8, 8)), url, str(outside), str(tmp_path / "pipe.png"), "/dev/zero"]
        src = read_hf_dataset(_save_paths(tmp_path / "ds", cells, [0, 1, 0, 1, 0]))
        loaded = _loads(src)
    finally:
        server.shutdown()
        server.server_close()
    assert _Counter.hits == [] and [img is not None for img in loaded] == [True, False, False, False, False]
    allowed = read_hf_dataset(tmp_path / "ds", allow_outside_images=True)
    assert allowed.images.load(2) is not None and allowed.images.load(3) is None  # a FIFO never, allowed or not


def test_a_thin_embedded_image_is_read_and_one_past_the_pixel_limit_is_skipped(tmp_path, monkeypatch):
    from vitkit.data import images

    src = read_hf_dataset(_save(tmp_path / "ds", [Image.new("RGB", (20000, 1)), Image.new("RGB", (8, 8)),
                                                  Image.new("RGB", (40, 40))], [0, 1, 0]))
    monkeypatch.setattr(images.LIMITS, "max_pixels", 20_000)  # the strip fits; 40x40 = 1,600 does too
    assert [img is not None for img in _loads(src)] == [True, True, True]
    monkeypatch.setattr(images.LIMITS, "max_pixels", 1_000)  # now the strip and 40x40 are past it
    assert [img is not None for img in _loads(src)] == [False, True, False]


@pytest.mark.parametrize("files", [[], "data.arrow", [{"filename": "../outside/secret.arrow"}],
                                   [{"filename": "/etc/passwd"}], [{"filename": 5}], [{"filename": "nope.arrow"}]])
def test_state_json_naming_other_data_files_is_refused(tmp_path, files):
    folder = _save(tmp_path / "ds", [Image.new("RGB", (8, 8))] * 2, [0, 1])
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**state, "_data_files": files}))
    with pytest.raises(DataError, match="state.json"):
        read_hf_dataset(folder)


def test_deep_dataset_info_is_one_error(tmp_path):
    folder = _save(tmp_path / "ds", [Image.new("RGB", (8, 8))] * 2, [0, 1])
    (folder / "dataset_info.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="dataset_info.json.*nested too deeply"):
        read_hf_dataset(folder)


def test_class_label_values_beyond_its_names_are_refused_before_training(tmp_path):
    folder = _save(tmp_path / "ds", [Image.new("RGB", (8, 8))] * 3, [0, 1, 1])
    info = json.loads((folder / "dataset_info.json").read_text())
    info["features"]["label"]["names"] = ["a"]
    (folder / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"row 1 has the label 1.*1 classes"):
        load_hf_splits(folder)


def test_no_label_inside_a_multi_label_list_is_no_label(tmp_path):
    folder = _save(tmp_path / "ds", [Image.new("RGB", (8, 8))] * 2, [[0, -1], [-1]],
                   label_feature=datasets.List(datasets.ClassLabel(names=NAMES)))
    src = read_hf_dataset(folder)
    assert [t.tolist() for t in src.images.labels] == [[1.0, 0.0], [0.0, 0.0]]


def _retype_image(folder: Path, feature: dict) -> Path:
    info = json.loads((folder / "dataset_info.json").read_text())
    info["features"]["image"] = feature
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


@pytest.mark.parametrize("feature", [{"dtype": "string", "_type": "Value"}, {"dtype": "int64", "_type": "Value"}])
def test_an_image_feature_changed_to_another_type_is_one_line(tmp_path, feature, capsys):
    folder = _retype_image(_save(tmp_path / "ds", [Image.new("RGB", (8, 8))] * 2, [0, 1]), feature)
    for kwargs in ({}, {"image_column": "image"}):
        with pytest.raises(DataError, match="is not a dataset saved with save_to_disk") as err:
            read_hf_dataset(folder, **kwargs)
        assert "\n" not in str(err.value)
    capsys.readouterr()  # the progress bars of save_to_disk
    assert main(["train", "--hf-dataset", str(folder), "--image-column", "image", "--out", str(tmp_path / "r")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_column_of_numbers_named_as_the_image_column_is_refused_naming_it(tmp_path, capsys):
    feats = datasets.Features({"image": datasets.Value("int64"), "label": datasets.ClassLabel(names=NAMES)})
    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"image": [1, 2], "label": [0, 1]}, features=feats).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"image column 'image' holds Value\('int64'\), not images"):
        read_hf_dataset(folder, image_column="image")
    capsys.readouterr()  # the progress bars of save_to_disk
    assert main(["train", "--hf-dataset", str(folder), "--image-column", "image", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not images" in err[0]


def test_a_column_of_text_named_as_the_image_column_is_read_as_paths_skipped_and_counted(tmp_path, caplog):
    (tmp_path / "ds").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "ds" / "x.png")
    feats = datasets.Features({"image": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)})
    cells = ["x.png", "hello", "x" * 10_000, "/etc/passwd"]
    datasets.Dataset.from_dict({"image": cells, "label": [0, 1, 0, 1]}, features=feats).save_to_disk(
        str(tmp_path / "ds"))
    src = read_hf_dataset(tmp_path / "ds", image_column="image")
    with caplog.at_level(logging.WARNING):
        loaded = _loads(src)
    assert loaded[0].size == (8, 8) and loaded[1:] == [None] * 3
    skips = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skips) == 3 and all(len(m) < 500 for m in skips)


@pytest.mark.parametrize("kind", ["class-label", "plain-values"])
def test_more_classes_than_the_limit_is_refused_before_targets_are_built(tmp_path, monkeypatch, kind):
    from vitkit.data import datasets as vitkit_datasets

    monkeypatch.setattr(vitkit_datasets.LIMITS, "max_classes", 3)
    names = [f"c{i}" for i in range(4)]
    feature = datasets.ClassLabel(names=names) if kind == "class-label" else datasets.Value("string")
    folder = _save(tmp_path / "ds", [Image.new("RGB", (8, 8))] * 4, [0, 1, 2, 3] if kind == "class-label" else names,
                   label_feature=feature)
    with pytest.raises(DataError, match="has 4 classes, more than the limit of 3"):
        read_hf_dataset(folder)
    monkeypatch.setattr(vitkit_datasets.LIMITS, "max_classes", 4)
    assert len(read_hf_dataset(folder).classes) == 4
