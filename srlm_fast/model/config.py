"""`ModelConfig`: a Llama-family decoder's shape, its named presets, and Hugging Face `config.json`.

It converts to and from the Hugging Face `LlamaConfig` JSON in both of its shapes: transformers 4.x writes
`rope_theta` and `rope_scaling`, transformers 5.x writes one `rope_parameters` object. We read both and write
both, so every generation of tools (transformers 4 and 5, vLLM) reads what we save.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srlm_fast.config import ConfigError
from srlm_fast.io import read_json


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 rotary frequency scaling (the `rope_type: "llama3"` of HF configs)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 4096
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 4
    intermediate_size: int = 768
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    head_dim: int | None = None  # None: dim // n_heads
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        for key in (
            "vocab_size",
            "dim",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "intermediate_size",
            "max_seq_len",
        ):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{key}: must be a positive integer, got {v!r}")
        for key in ("rope_theta", "norm_eps"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (0 < v < float("inf")):
                raise ConfigError(f"{key}: must be a positive number, got {v!r}")
        if self.head_dim is not None and (
            isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) or self.head_dim < 1
        ):
            raise ConfigError(f"head_dim: must be a positive integer, got {self.head_dim!r}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim is None and self.dim % self.n_heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.head_size % 2:
            raise ConfigError(f"head_dim ({self.head_size}) must be even for rotary embeddings")

    @property
    def head_size(self) -> int:
        return self.head_dim if self.head_dim is not None else self.dim // self.n_heads

    # ---- sizes -------------------------------------------------------------------------------
    def num_params(self, include_embedding: bool = True) -> int:
        d, hd = self.dim, self.head_size
        attn = d * hd * (self.n_heads * 2 + self.n_kv_heads * 2)
        mlp = 3 * d * self.intermediate_size
        per_layer = attn + mlp + 2 * d
        n = self.n_layers * per_layer + d  # + final norm
        emb = self.vocab_size * d
        if include_embedding:
            n += emb if self.tie_embeddings else 2 * emb
        elif not self.tie_embeddings:
            n += emb  # the LM head is a real matmul even when embeddings are excluded
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward = 3x forward), PaLM-style accounting.

        6 * (non-embedding matmul params) plus the attention score/value matmuls,
        12 * n_layers * n_heads * head_dim * seq_len (causal masking not discounted, as in PaLM/torchtitan).
        """
        seq_len = seq_len or self.max_seq_len
        n = self.num_params(include_embedding=False)
        return 6 * n + 12 * self.n_layers * self.n_heads * self.head_size * seq_len

    def kv_cache_bytes_per_token(self, bytes_per_elem: int = 2) -> int:
        return 2 * self.n_layers * self.n_kv_heads * self.head_size * bytes_per_elem

    # ---- Hugging Face config.json --------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """A `config.json` for `LlamaForCausalLM` readable by transformers 4 and 5 and vLLM."""
        rope_parameters: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        rope_scaling = None
        if self.rope_scaling is not None:
            rope_scaling = {"rope_type": "llama3", **dataclasses.asdict(self.rope_scaling)}
            rope_parameters = {**rope_scaling, "rope_theta": self.rope_theta}
        out: dict[str, Any] = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_size,
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.norm_eps,
            "hidden_act": "silu",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "initializer_range": 0.02,
            "tie_word_embeddings": self.tie_embeddings,
            # transformers 4.x / vLLM read these two ...
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            # ... transformers 5.x reads this one.
            "rope_parameters": rope_parameters,
            "use_cache": True,
        }
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], *, source: str = "config.json") -> ModelConfig:
        """Build from a Hugging Face Llama `config.json` of either generation (4.x or 5.x). Every value used is
        type-checked: a wrong one is a `ConfigError` naming the file and the key."""
        if not isinstance(hf, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(hf).__name__}")

        def get(key: str, kind: type, default: Any = None, table: dict | None = None, where: str = "") -> Any:
            table = hf if table is None else table
            v = table.get(key, default)
            if v is None:
                return None
            ok = isinstance(v, bool) if kind is bool else (
                not isinstance(v, bool) and isinstance(v, int | float if kind is float else kind)
            )  # fmt: skip
            if not ok:
                names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
                raise ConfigError(f"{source}: {where}{key} must be {names[kind]}, got {v!r}")
            return float(v) if kind is float else v

        model_type = get("model_type", str, "llama")
        if model_type not in ("llama", "mistral"):
            raise ConfigError(f"{source}: model_type {model_type!r} is not a Llama-family model")
        for key in ("attention_bias", "mlp_bias"):
            if hf.get(key):
                raise ConfigError(f"{source}: {key}=true is not supported (Llama has no biases)")
        if hf.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported (need 'silu')")
        if hf.get("sliding_window"):
            raise ConfigError(f"{source}: sliding-window attention is not supported")
        missing = [
            k
            for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
            if k not in hf
        ]
        if missing:
            raise ConfigError(f"{source}: missing key(s) {', '.join(missing)}")

        # transformers 5 keeps theta and scaling in `rope_parameters`; 4.x in rope_theta / rope_scaling.
        for key in ("rope_parameters", "rope_scaling"):
            if hf.get(key) is not None and not isinstance(hf[key], dict):
                raise ConfigError(f"{source}: {key} must be an object, got {hf[key]!r}")
        rope = dict(hf.get("rope_parameters") or {})
        if not rope:
            rope = dict(hf.get("rope_scaling") or {})
            rope["rope_theta"] = get("rope_theta", float, 10000.0)
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        scaling = None
        r = "rope parameters: "
        if rope_type == "llama3":
            if "factor" not in rope:
                raise ConfigError(f"{source}: rope_type llama3 needs a factor")
            scaling = RopeScaling(
                factor=get("factor", float, None, rope, r),
                low_freq_factor=get("low_freq_factor", float, 1.0, rope, r),
                high_freq_factor=get("high_freq_factor", float, 4.0, rope, r),
                original_max_position_embeddings=get("original_max_position_embeddings", int, 8192, rope, r),
            )
        elif rope_type not in ("default", None):
            raise ConfigError(f"{source}: rope_type {rope_type!r} is not supported (default or llama3)")

        n_heads = get("num_attention_heads", int)
        hidden = get("hidden_size", int)
        head_dim = get("head_dim", int)
        if n_heads and hidden and head_dim == hidden // n_heads:
            head_dim = None  # the default; keep configs comparable
        eos = hf.get("eos_token_id")
        if eos is not None and not (
            (isinstance(eos, int) and not isinstance(eos, bool))
            or (isinstance(eos, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in eos))
        ):
            raise ConfigError(f"{source}: eos_token_id must be an integer or a list of integers, got {eos!r}")
        try:
            return cls(
                vocab_size=get("vocab_size", int),
                dim=hidden,
                n_layers=get("num_hidden_layers", int),
                n_heads=n_heads,
                n_kv_heads=get("num_key_value_heads", int) or n_heads,
                intermediate_size=get("intermediate_size", int, 4 * hidden if hidden else None),
                max_seq_len=get("max_position_embeddings", int, 2048),
                rope_theta=get("rope_theta", float, None, rope, r) or get("rope_theta", float, 10000.0),
                rope_scaling=scaling,
                norm_eps=get("rms_norm_eps", float, 1e-6),
                tie_embeddings=get("tie_word_embeddings", bool, False),
                head_dim=head_dim,
                bos_token_id=get("bos_token_id", int),
                eos_token_id=eos,
                pad_token_id=get("pad_token_id", int),
            )
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_hf_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            hf = read_json(path)
        except ValueError as e:  # not UTF-8 or not JSON: file:line
            raise ConfigError(str(e)) from None
        return cls.from_hf_dict(hf, source=str(path))


_LLAMA3_ROPE = RopeScaling(factor=32.0, original_max_position_embeddings=8192)

# Architectures of real families (from their published config.json files); the weights are theirs to load.
PRESETS: dict[str, ModelConfig] = {
    # ~5.2M parameters: the CPU debug size of DESIGN.md (4 layers, d=256, vocab 4096).
    "debug": ModelConfig(),
    # A few hundred thousand parameters: unit tests.
    "tiny": ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=160),
    "smollm2-135m": ModelConfig(
        vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, intermediate_size=1536,
        max_seq_len=8192, rope_theta=100000.0, tie_embeddings=True,
    ),
    "smollm2-360m": ModelConfig(
        vocab_size=49152, dim=960, n_layers=32, n_heads=15, n_kv_heads=5, intermediate_size=2560,
        max_seq_len=8192, rope_theta=100000.0, tie_embeddings=True,
    ),
    "llama-3.2-1b": ModelConfig(
        vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, intermediate_size=8192,
        max_seq_len=131072, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE, tie_embeddings=True,
    ),
    "llama-3.2-3b": ModelConfig(
        vocab_size=128256, dim=3072, n_layers=28, n_heads=24, n_kv_heads=8, intermediate_size=8192,
        max_seq_len=131072, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE, tie_embeddings=True,
    ),
    "llama-2-7b": ModelConfig(
        vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, intermediate_size=11008,
        max_seq_len=4096,
    ),
    "llama-2-70b": ModelConfig(
        vocab_size=32000, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, intermediate_size=28672,
        max_seq_len=4096,
    ),
    "llama-3-8b": ModelConfig(
        vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, intermediate_size=14336,
        max_seq_len=8192, rope_theta=500000.0,
    ),
    "llama-3.1-8b": ModelConfig(
        vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, intermediate_size=14336,
        max_seq_len=131072, rope_theta=500000.0, rope_scaling=RopeScaling(factor=8.0),
    ),
    "llama-3-70b": ModelConfig(
        vocab_size=128256, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, intermediate_size=28672,
        max_seq_len=8192, rope_theta=500000.0,
    ),
}  # fmt: skip


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
