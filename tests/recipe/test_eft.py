"""EFT data from human rankings: the agreement rule, rebalancing, and `srlm eft build` on a real checkpoint."""

import json

from srlm_fast.cli import main
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.recipe.eft import agrees_with_humans, build_eft, rebalance
from srlm_fast.recipe.judge import JudgeTemplate
from srlm_fast.recipe.seed_data import RatedPrompt, RatedReply
from tests.helpers import tiny_model


def test_agreement_rule():
    assert agrees_with_humans([3, 2, 1], [5, 4, 1]) is None
    assert agrees_with_humans([3, 2, 1], [5, 5, 1]) is None  # a tie inside is allowed
    assert agrees_with_humans([3, 2, 1], [1, 4, 5]) == "discordant"
    assert agrees_with_humans([3, 2], [4, 4]) == "no_evidence"
    assert agrees_with_humans([2, 2], [5, 1]) == "no_evidence"  # humans tied: no evidence either way


def test_rebalance_caps_every_score_at_the_median_count():
    rows = [
        {"score": s, "prompt_index": i, "reply_index": 0} for i, s in enumerate([4] * 9 + [3] * 3 + [1] * 2)
    ]
    kept, dropped = rebalance(rows, seed=0)
    counts = {s: sum(r["score"] == s for r in kept) for s in (1, 3, 4)}
    assert counts == {1: 2, 3: 3, 4: 3} and dropped == 6
    assert rebalance(rows, seed=0) == (kept, dropped)  # deterministic


def test_build_keeps_only_prompts_judged_like_the_humans():
    ranked = [
        RatedPrompt("agree", (RatedReply("good", 2.0), RatedReply("bad", 1.0))),
        RatedPrompt("disagree", (RatedReply("good", 2.0), RatedReply("bad", 1.0))),
        RatedPrompt("invalid", (RatedReply("good", 2.0), RatedReply("bad", 1.0))),
        RatedPrompt("single", (RatedReply("only", 1.0),)),
    ]
    judgments = {("agree", "good"): "Fine.\nScore: 4", ("agree", "bad"): "Weak.\nScore: 1",
                 ("disagree", "good"): "Score: 1", ("disagree", "bad"): "Score: 5",
                 ("invalid", "good"): "Score: 4", ("invalid", "bad"): "no score here"}  # fmt: skip
    template = JudgeTemplate("Rate it.\nQ: {instruction}\nA: {response}")

    def generate_fn(prompts, n, **kw):
        out = []
        for p in prompts:
            q, a = p.split("Q: ")[1].split("\nA: ")
            out.append([judgments[(q, a)]] * n)
        return out

    rows, stats = build_eft(ranked, generate_fn, template)
    assert [(r["score"], r["response"]) for r in rows] == [(4.0, "Fine.\nScore: 4"), (1.0, "Weak.\nScore: 1")]
    assert rows[0]["prompt"] == template.render("agree", "good")
    assert stats.kept_prompts == 1
    assert dict(stats.dropped) == {"discordant": 1, "invalid": 1, "too_few_replies": 1}


def test_cli_build_runs_a_real_checkpoint(tmp_path, capsys):
    texts = ["Score: 3. What is two plus two? It is four."] * 30
    tok = Tokenizer.train_bpe(texts, vocab_size=300)
    model = tiny_model(vocab_size=tok.vocab_size, max_seq_len=256)
    model.save_pretrained(tmp_path / "ck", tokenizer=tok)
    ranked = tmp_path / "ranked.jsonl"
    rows = [
        {"question": "What is two plus two?", "answer": a, "rank": r} for r, a in enumerate(["four", "five"])
    ]
    ranked.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    out = tmp_path / "eft.jsonl"
    assert main(["eft", "build", "--checkpoint", str(tmp_path / "ck"), "--ranked", str(ranked), "--out", str(out),
                 "--template", "compact", "--max-new-tokens", "8"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "ranked.jsonl:3" in printed  # the bad line is reported with file and line, and skipped
    assert (
        out.is_file()
    )  # an untrained judge writes no valid score: the prompt is dropped, the file still written
    assert '"invalid": 1' in printed
