"""File names made from data stay in their folder; a full disk names the file it could not write."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from PIL import Image

from vitkit.data.digits import export_samples
from vitkit.errors import OutputError
from vitkit.fileio import atomic_write, safe_filename

HOSTILE = ["../../../../x/ESCAPED", "/abs/victim", "..", ".", "", "a\x00b", "..\\..\\win", "\n", "a/../../b", "x" * 500]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_name_from_data_becomes_one_plain_file_name(name, tmp_path):
    safe = safe_filename(name, fallback="class0")
    assert safe and "/" not in safe and "\\" not in safe and "\x00" not in safe and not safe.startswith(".")
    assert len(safe) <= 100 and (tmp_path / safe).resolve().parent == tmp_path.resolve()


def test_ordinary_names_are_kept():
    assert safe_filename("golden retriever", fallback="c") == "golden retriever"
    assert safe_filename("7", fallback="c") == "7"


def test_sample_images_never_leave_their_folder(tmp_path):
    victim = tmp_path / "x" / "victim_0.png"
    victim.parent.mkdir()
    victim.write_bytes(b"keep")
    out = tmp_path / "run" / "samples"
    classes = [str(tmp_path / "x" / "victim"), "../../x/ESCAPED", "ok"]
    written = export_samples([Image.new("RGB", (4, 4))] * 3, [0, 1, 2], out, classes=classes)
    assert victim.read_bytes() == b"keep" and not (tmp_path / "x" / "ESCAPED_0.png").exists()
    assert len(written) == 3 and all(p.parent == out and p.exists() for p in written)
    assert sorted(tmp_path.rglob("*.png")) == sorted([victim, *out.iterdir()])


def test_a_full_disk_names_the_output(tmp_path):
    def full(tmp: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "feats.npy"
    with pytest.raises(OutputError, match=r"feats\.npy.*No space left"):
        atomic_write(target, full)
    assert not target.exists() and not list(tmp_path.iterdir())
