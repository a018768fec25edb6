import pytest

from srlm_fast.config import ConfigError, from_dict, load_job_config, parse_overrides, to_toml
from srlm_fast.model.config import PRESETS, ModelConfig, RopeScaling


@pytest.mark.parametrize(
    "name, expected",
    # Published parameter counts of the real checkpoints.
    [("smollm2-135m", 134_515_008), ("llama-3.2-1b", 1_235_814_400), ("llama-2-7b", 6_738_415_616),
     ("llama-3-8b", 8_030_261_248)],
)  # fmt: skip
def test_preset_parameter_counts_match_published_models(name, expected):
    assert PRESETS[name].num_params() == expected


def test_hf_dict_roundtrip_keeps_every_field():
    cfg = ModelConfig(
        vocab_size=1000, dim=96, n_layers=3, n_heads=6, n_kv_heads=2, rope_scaling=RopeScaling(factor=4.0)
    )
    assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg


def test_reads_transformers4_and_transformers5_rope_shapes():
    common = dict(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    scaling = dict(
        factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
    )
    v4 = {**common, "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", **scaling}}
    v5 = {**common, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, **scaling}}
    old_style = {**common, "rope_theta": 500000.0, "rope_scaling": {"type": "llama3", **scaling}}
    parsed = [ModelConfig.from_hf_dict(d) for d in (v4, v5, old_style)]
    assert parsed[0] == parsed[1] == parsed[2]
    assert parsed[0].rope_theta == 500000.0 and parsed[0].rope_scaling == RopeScaling(**scaling)


def test_written_config_has_both_rope_shapes():
    d = PRESETS["llama-3.2-1b"].to_hf_dict()
    assert d["rope_theta"] == 500000.0 and d["rope_scaling"]["rope_type"] == "llama3"
    assert d["rope_parameters"]["rope_theta"] == 500000.0 and d["rope_parameters"]["factor"] == 32.0


def test_unsupported_hf_configs_are_refused():
    base = dict(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    with pytest.raises(ConfigError, match="attention_bias"):
        ModelConfig.from_hf_dict({**base, "attention_bias": True})
    with pytest.raises(ConfigError, match="rope_type"):
        ModelConfig.from_hf_dict({**base, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ConfigError, match="missing key"):
        ModelConfig.from_hf_dict({"vocab_size": 100})


def test_from_dict_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(ConfigError, match="unknown key.*dimm"):
        from_dict(ModelConfig, {"dimm": 3})
    with pytest.raises(ConfigError, match="n_layers: expected an integer, got .four. \\(a string\\)"):
        from_dict(ModelConfig, {"n_layers": "four"})
    cfg = from_dict(ModelConfig, {"rope_scaling": {"factor": 2}, "norm_eps": 1})
    assert cfg.rope_scaling == RopeScaling(factor=2.0) and cfg.norm_eps == 1.0


def test_overrides_and_toml_roundtrip(tmp_path):
    assert parse_overrides(["--a.b=3", "--a.c=hello", "--d=[1, 2]", "--e=true"]) == {
        "a": {"b": 3, "c": "hello"}, "d": [1, 2], "e": True,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="--section.key=value"):
        parse_overrides(["dim=3"])
    path = tmp_path / "model.toml"
    path.write_text(to_toml(ModelConfig(dim=128, rope_scaling=RopeScaling())))
    cfg = load_job_config(ModelConfig, path, ["--n_layers=7"])
    assert cfg == ModelConfig(dim=128, rope_scaling=RopeScaling(), n_layers=7)
    path.write_text("dim = 128\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"model\.toml.*bogus"):
        load_job_config(ModelConfig, path)


def test_invalid_head_layout_is_refused():
    with pytest.raises(ConfigError, match="multiple of n_kv_heads"):
        ModelConfig(n_heads=6, n_kv_heads=4)
