"""HF-layout checkpoints: transformers interop both ways, sharding, and clear errors on bad input."""

import json

import pytest
import torch

from srlm_fast.io import OutputError
from srlm_fast.model.checkpoint import CheckpointError, CheckpointReader
from srlm_fast.model.config import RopeScaling
from srlm_fast.model.llama import Llama
from tests.helpers import tiny_model

transformers = pytest.importorskip("transformers")

CONFIGS = {
    "gqa-untied": dict(n_heads=4, n_kv_heads=2, tie_embeddings=False),
    "mha-tied": dict(n_heads=4, n_kv_heads=4, tie_embeddings=True),
    "mqa-llama3-rope": dict(n_heads=4, n_kv_heads=1, rope_theta=500000.0,
                            rope_scaling=RopeScaling(factor=8.0, original_max_position_embeddings=32)),
}  # fmt: skip


def _hf_logits(directory, x):
    hf = transformers.LlamaForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    with torch.no_grad():
        return hf(x).logits


@pytest.mark.parametrize("name", CONFIGS)
def test_transformers_loads_what_we_save(tmp_path, name):
    model = tiny_model(**CONFIGS[name])
    model.save_pretrained(tmp_path / "ck")
    x = torch.randint(0, 123, (2, 40))  # past original_max_position_embeddings: scaling matters
    with torch.no_grad():
        ours = model.logits(x)
    assert (ours - _hf_logits(tmp_path / "ck", x)).abs().max() <= 1e-4


@pytest.mark.parametrize("name", CONFIGS)
def test_we_load_what_transformers_saves(tmp_path, name):
    ours = tiny_model(**CONFIGS[name])
    hf_cfg = transformers.LlamaConfig(
        **{k: v for k, v in ours.config.to_hf_dict().items() if k != "architectures"}
    )
    torch.manual_seed(1)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    loaded = Llama.from_pretrained(tmp_path / "hf")
    x = torch.randint(0, 123, (2, 40))
    with torch.no_grad():
        diff = (loaded.logits(x) - hf(x).logits).abs().max()
    assert diff <= 1e-4


def test_sharded_checkpoint_roundtrip_and_streaming_rows(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ck", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "ck" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    loaded = Llama.from_pretrained(tmp_path / "ck")
    for (n, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
        assert torch.equal(a, b), n
    reader = CheckpointReader(tmp_path / "ck")
    torch.testing.assert_close(
        reader.get_rows("embed_tokens.weight", 3, 7), model.embed_tokens.weight[3:7].detach()
    )
    # The sharded layout is what transformers reads too.
    x = torch.randint(0, 123, (1, 9))
    assert (_hf_logits(tmp_path / "ck", x) - model.logits(x).detach()).abs().max() <= 1e-4


def test_dtype_and_overwrite(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ck", dtype=torch.bfloat16)
    assert Llama.from_pretrained(tmp_path / "ck").embed_tokens.weight.dtype == torch.bfloat16
    assert (
        Llama.from_pretrained(tmp_path / "ck", dtype=torch.float32).embed_tokens.weight.dtype == torch.float32
    )
    with pytest.raises(OutputError, match="already exists there; pass --overwrite"):
        tiny_model(seed=3).save_pretrained(tmp_path / "ck")
    tiny_model(seed=3).save_pretrained(tmp_path / "ck", overwrite=True)  # replacing a checkpoint is atomic
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_save_never_replaces_what_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    (tmp_path / "file").write_text("keep me too")
    for target, message in [("notes", "is not a checkpoint"), ("file", "is not a directory")]:
        with pytest.raises(OutputError, match=message):
            tiny_model().save_pretrained(tmp_path / target, overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert (tmp_path / "file").read_text() == "keep me too"
    # The parent of an input (here the tokenizer's source) is refused even with overwrite.
    tiny_model().save_pretrained(tmp_path / "runs" / "ck")
    with pytest.raises(OutputError, match="contains an input"):
        tiny_model().save_pretrained(tmp_path / "runs", inputs=[tmp_path / "runs" / "ck"], overwrite=True)
    (tmp_path / "empty").mkdir()
    tiny_model().save_pretrained(tmp_path / "empty")  # an empty directory is fine
    assert (tmp_path / "empty" / "config.json").is_file()


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["intermediate_size"] = 100
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight.*\[96, 64\].*\[100, 64\]"
    ):
        Llama.from_pretrained(tmp_path / "ck")


def test_missing_and_unexpected_tensors(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\): model\.layers\.2\."):
        Llama.from_pretrained(tmp_path / "ck")


def test_corrupt_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        CheckpointReader(tmp_path / "nope")
    tiny_model().save_pretrained(tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="corrupt or unreadable safetensors"):
        Llama.from_pretrained(tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor"):
        Llama.from_pretrained(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        Llama.from_pretrained(tmp_path / "ck")
