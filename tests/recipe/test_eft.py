"""EFT data from human rankings: the agreement rule, rebalancing, and `srlm eft build` on a real checkpoint."""

import json

from srlm_fast.cli import main
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.recipe.eft import agrees_with_humans, build_eft, label_eft, ladder_scores, leave_out, rebalance
from srlm_fast.recipe.judge import JudgeTemplate, parse_score
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


def test_ladder_scores_spread_the_human_levels_from_5_to_1():
    assert ladder_scores([2.0, 1.0]) == [5, 1]
    assert ladder_scores([0.0, -1.0, -2.0]) == [5, 3, 1]
    assert ladder_scores([0.9, 0.9, 0.0]) == [5, 5, 1]  # tied replies share a score
    assert ladder_scores([0.0, -1.0, -2.0, -3.0]) == [5, 4, 2, 1]
    assert ladder_scores([0.5, 0.5]) is None  # all tied: no ranking evidence


def test_label_eft_scores_replies_by_the_human_ranking():
    ranked = [
        RatedPrompt("Name a colour.", (RatedReply("Blue, for example.", 0.0), RatedReply("No.", -1.0))),
        RatedPrompt("tied", (RatedReply("a", 1.0), RatedReply("b", 1.0))),
        RatedPrompt("single", (RatedReply("only", 1.0),)),
    ]
    template = JudgeTemplate("Rate it.\nQ: {instruction}\nA: {response}")
    rows, stats = label_eft(ranked, template, max_response_chars=5)
    assert [(r["prompt"], r["response"], r["score"]) for r in rows] == [
        (template.render("Name a colour.", "Blue,"), "Score: 5", 5.0),  # cut to 5 characters, label kept
        (template.render("Name a colour.", "No."), "Score: 1", 1.0),
    ]
    assert all(parse_score(r["response"]) == r["score"] for r in rows)
    assert stats.kept_prompts == 1 and dict(stats.dropped) == {"no_evidence": 1, "too_few_replies": 1}


def test_leave_out_ignores_case_and_whitespace():
    ranked = [RatedPrompt("What is  Rust?", ()), RatedPrompt("What is Go?", ())]
    assert [rp.prompt for rp in leave_out(ranked, ["what is rust?\n"])] == ["What is Go?"]


def test_cli_human_labels_need_no_checkpoint_and_leave_out_held_out_trees(tmp_path, capsys):
    ranked = tmp_path / "ranked.jsonl"
    rows = [{"question": q, "answer": a, "rank": r} for q in ("Held out?", "Train on me?")
            for r, a in enumerate(["yes, because", "no"])]  # fmt: skip
    ranked.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    trees = tmp_path / "trees.jsonl"
    reply = {"text": "sure", "rank": 0, "replies": []}
    trees.write_text(json.dumps({"prompt": {"text": "held out?", "replies": [reply]}}) + "\n")
    out = tmp_path / "eft.jsonl"
    assert main(["eft", "build", "--labels", "human", "--ranked", str(ranked), "--held-out", str(trees),
                 "--template", "compact", "--out", str(out)]) == 0  # fmt: skip
    assert "left out 1 prompts" in capsys.readouterr().out
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["response"], "Train on me?" in r["prompt"]) for r in got] == [
        ("Score: 5", True),
        ("Score: 1", True),
    ]


def test_cli_model_labels_need_a_checkpoint(tmp_path, capsys):
    ranked = tmp_path / "ranked.jsonl"
    ranked.write_text(json.dumps({"question": "q", "answer": "a", "rank": 0}) + "\n")
    assert main(["eft", "build", "--ranked", str(ranked), "--out", str(tmp_path / "eft.jsonl")]) != 0
    assert "--labels model needs --checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "eft.jsonl").exists()
