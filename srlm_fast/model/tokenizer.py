"""Tokenizers (Hugging Face `tokenizers`) and chat templates with an assistant-token mask.

We use the `tokenizers` library rather than a hand-written BPE: it reads every `tokenizer.json`
on the Hub, trains a byte-level BPE in seconds, and is what transformers and vLLM load.

Chat templates. A loaded tokenizer brings its own conventions; the template is chosen from its
special tokens (or named explicitly):

* `srlm`   — ours, for tokenizers trained here: `<|user|>\\n…<|end|>\\n<|assistant|>\\n…<|end|>\\n`
* `llama3` — `<|start_header_id|>role<|end_header_id|>\\n\\n…<|eot_id|>` (Llama 3.x)
* `chatml` — `<|im_start|>role\\n…<|im_end|>\\n` (SmolLM2, Qwen, …)
* `llama2` — `[INST] … [/INST] … </s>` (Llama 2 chat; the system prompt goes into the first turn)

Message contents are encoded with special tokens disabled: a model output or user text that
contains the string `<|end|>` stays text and cannot end a turn or forge a role header.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from srlm_fast.io import write_json_atomic

PAD, BOS, EOS = "<|pad|>", "<|begin_of_text|>", "<|end_of_text|>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, SYSTEM, USER, ASSISTANT, END]
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatTemplate:
    """Pieces of trusted template text (may contain special tokens) around each message."""

    name: str
    bos: str  # prepended once
    header: dict[str, str]  # role → text before the content
    end: dict[
        str, str
    ]  # role → text closing the message; the assistant's is a target (it must learn to stop)
    after_end: str  # text after `end` that is not a target (e.g. a newline)
    stop: tuple[str, ...]  # tokens that end generation
    system_in_first_user: bool = False


TEMPLATES: dict[str, ChatTemplate] = {
    "srlm": ChatTemplate(
        name="srlm", bos=BOS, end=dict.fromkeys(ROLES, END), after_end="\n", stop=(END, EOS),
        header={"system": f"{SYSTEM}\n", "user": f"{USER}\n", "assistant": f"{ASSISTANT}\n"},
    ),
    "llama3": ChatTemplate(
        name="llama3", bos="<|begin_of_text|>", end=dict.fromkeys(ROLES, "<|eot_id|>"), after_end="", stop=("<|eot_id|>", "<|end_of_text|>"),
        header={r: f"<|start_header_id|>{r}<|end_header_id|>\n\n" for r in ROLES},
    ),
    "chatml": ChatTemplate(
        name="chatml", bos="", end=dict.fromkeys(ROLES, "<|im_end|>"), after_end="\n", stop=("<|im_end|>",),
        header={r: f"<|im_start|>{r}\n" for r in ROLES},
    ),
    "llama2": ChatTemplate(
        name="llama2", bos="", after_end="", stop=("</s>",), system_in_first_user=True,
        header={"system": "", "user": "<s>[INST] ", "assistant": " "},
        end={"system": "", "user": " [/INST]", "assistant": " </s>"},
    ),
}  # fmt: skip


def detect_template(vocab: dict[str, int]) -> str:
    if "<|start_header_id|>" in vocab and "<|eot_id|>" in vocab:
        return "llama3"
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        return "chatml"
    if USER in vocab and END in vocab:
        return "srlm"
    if "<s>" in vocab and "</s>" in vocab:
        return "llama2"
    raise ValueError(
        "cannot tell this tokenizer's chat convention from its special tokens; "
        f"pass template= one of {', '.join(TEMPLATES)}"
    )


class Tokenizer:
    """A `tokenizers.Tokenizer` plus a chat template."""

    def __init__(self, tok: HFTokenizer, template: str | None = None, source_dir: Path | None = None) -> None:
        self.tok = tok
        # A second handle that treats special-token strings in message text as plain text.
        self._text_tok = HFTokenizer.from_str(tok.to_str())
        self._text_tok.encode_special_tokens = True
        vocab = tok.get_vocab(with_added_tokens=True)
        name = template or detect_template(vocab)
        if name not in TEMPLATES:
            raise ValueError(f"unknown chat template {name!r}; choose one of {', '.join(TEMPLATES)}")
        self.template = TEMPLATES[name]
        missing = [s for s in self.template.stop if s not in vocab]
        if missing:
            raise ValueError(f"template {name!r} needs token(s) {missing} that this tokenizer lacks")
        self.source_dir = source_dir
        self.stop_ids = [vocab[s] for s in self.template.stop]
        self.eos_id = self.stop_ids[0]
        self.bos_id = vocab.get(self.template.bos) if self.template.bos else None
        self.pad_id = vocab.get(PAD, vocab.get("<pad>", self.eos_id))

    # ---- construction and persistence -----------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike, template: str | None = None) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such tokenizer file")
        try:
            tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises plain Exceptions
            raise ValueError(f"{path}: not a valid tokenizer.json ({e})") from None
        return cls(tok, template, source_dir=path.parent)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, template: str | None = None) -> Tokenizer:
        return cls.from_file(Path(directory) / "tokenizer.json", template)

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Tokenizer:
        """Train a byte-level BPE (any input byte is representable) with our special tokens."""
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok, "srlm")

    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json, plus a tokenizer_config.json that transformers' AutoTokenizer reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(directory / "tokenizer.json"))
        src = self.source_dir
        if (
            src is not None
            and (src / "tokenizer_config.json").is_file()
            and src.resolve() != directory.resolve()
        ):
            for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
                if (src / name).is_file():
                    shutil.copyfile(src / name, directory / name)
        elif not (directory / "tokenizer_config.json").is_file():
            write_json_atomic(directory / "tokenizer_config.json", self._hf_tokenizer_config())

    def _hf_tokenizer_config(self) -> dict:
        t = self.template
        cfg = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": t.stop[0],
            "pad_token": PAD if PAD in self.tok.get_vocab(True) else t.stop[0],
            "clean_up_tokenization_spaces": False,
        }
        if t.bos:
            cfg["bos_token"] = t.bos
        if t.name == "srlm":
            cfg["chat_template"] = (
                "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
            )
        return cfg

    # ---- plain text -----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Token ids of `text` (no BOS). Special-token strings stay text unless `allow_special`."""
        return (self.tok if allow_special else self._text_tok).encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._text_tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    # ---- chat -----------------------------------------------------------------------------------
    def encode_chat(
        self, messages: Sequence[dict], *, add_generation_prompt: bool = False
    ) -> tuple[list[int], list[bool]]:
        """Token ids of a conversation and a mask that is True on the assistant's target tokens.

        The mask covers each assistant message's content and its end-of-turn token (the model must
        learn to stop), never the headers or the other roles. With `add_generation_prompt` the
        result ends with the assistant header, ready for sampling.
        """
        t = self.template
        ids: list[int] = []
        mask: list[bool] = []

        def add(piece: list[int], target: bool) -> None:
            ids.extend(piece)
            mask.extend([target] * len(piece))

        if t.bos:
            add(self.encode(t.bos, allow_special=True), False)
        messages = self._fold_system(messages)
        for i, msg in enumerate(messages):
            role, content = msg.get("role"), msg.get("content")
            if role not in ROLES or not isinstance(content, str):
                raise ValueError(f"message {i}: needs a role in {ROLES} and a string content, got {msg!r}")
            is_target = role == "assistant"
            add(self.encode(t.header[role], allow_special=True), False)
            add(self.encode(content), is_target)
            add(self.encode(t.end[role], allow_special=True), is_target)
            if t.after_end:
                add(self.encode(t.after_end, allow_special=True), False)
        if add_generation_prompt:
            add(self.encode(t.header["assistant"], allow_special=True), False)
        return ids, mask

    def _fold_system(self, messages: Sequence[dict]) -> list[dict]:
        if not self.template.system_in_first_user or not messages or messages[0].get("role") != "system":
            return list(messages)
        system, rest = messages[0], list(messages[1:])
        if rest and rest[0].get("role") == "user":
            rest[0] = {
                "role": "user",
                "content": f"<<SYS>>\n{system['content']}\n<</SYS>>\n\n{rest[0]['content']}",
            }
        return rest

    def encode_prompt(self, prompt: str, system: str | None = None) -> list[int]:
        """A single user turn followed by the assistant header: what the sampler continues."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        return self.encode_chat(messages, add_generation_prompt=True)[0]


def load_tokenizer(directory: str | os.PathLike, template: str | None = None) -> Tokenizer:
    return Tokenizer.from_dir(directory, template)
