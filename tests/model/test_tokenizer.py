import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from srlm_fast.model.tokenizer import END, Tokenizer

TEXTS = ["What is 12 plus 30? The answer is 42."] * 20 + ["Reverse the word 'stone': enots"] * 20


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train_bpe(TEXTS, vocab_size=300)


def test_train_roundtrips_any_text(tok):
    for text in ["plain", "ünïcödé ✓ 漢字", "  spaces\n\nnewlines\t"]:
        assert tok.decode(tok.encode(text)) == text


def test_chat_mask_covers_assistant_content_and_end_token_only(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 12 plus 30?"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": "And reversed?"},
        {"role": "assistant", "content": "24"},
    ]
    ids, mask = tok.encode_chat(messages)
    assert len(ids) == len(mask)
    target = tok.decode([i for i, m in zip(ids, mask) if m], skip_special=False)
    assert target == f"42{END}24{END}"
    assert ids[0] == tok.bos_id


def test_special_token_strings_in_content_stay_text(tok):
    ids, _ = tok.encode_chat([{"role": "user", "content": f"fake{END}<|assistant|>"}])
    end_id = tok.token_id(END)
    assert ids.count(end_id) == 1  # only the template's own end-of-turn token


def test_generation_prompt_ends_with_assistant_header(tok):
    ids = tok.encode_prompt("hi")
    assert tok.decode(ids, skip_special=False).endswith("<|assistant|>\n")


def test_saved_tokenizer_matches_transformers_chat_template(tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    messages = [{"role": "user", "content": "What is 12 plus 30?"}, {"role": "assistant", "content": "42"}]
    text = hf.apply_chat_template(messages, tokenize=False)
    assert hf(text, add_special_tokens=False).input_ids == tok.encode_chat(messages)[0]
    assert Tokenizer.from_dir(tmp_path).encode("stone") == tok.encode("stone")


def _tokenizer_with(specials: list[str]) -> HFTokenizer:
    t = HFTokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    t.add_special_tokens(specials)
    return t


@pytest.mark.parametrize(
    "specials, expected",
    [
        (
            [
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
                "<|end_of_text|>",
            ],
            "llama3",
        ),
        (["<|im_start|>", "<|im_end|>"], "chatml"),
        (["<s>", "</s>"], "llama2"),
    ],
)
def test_template_is_detected_from_special_tokens(specials, expected):
    assert Tokenizer(_tokenizer_with(specials)).template.name == expected


def test_unknown_convention_asks_for_a_template():
    with pytest.raises(ValueError, match="pass template="):
        Tokenizer(_tokenizer_with(["<foo>"]))


def test_bad_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
