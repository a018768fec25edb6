"""Readers for evaluation data: human preference rankings, preference pairs and held-out prompt sets.

Formats (the files in `../shared/data`, and any file of the same shape):
- OpenAssistant message trees (`prefs/oasst_en_100_trees.jsonl`): one tree per line, `{"prompt": message}` where a
  message has `text`, `role`, optional `deleted`, `replies` and (assistant replies) a human `rank`, 0 = best.
  Every prompter message with >= 2 ranked, non-deleted assistant replies is one ranked prompt; by default only
  the first turn (the tree's root), as in the paper. Unranked replies are dropped.
- HH-RLHF (`prefs/hh_rlhf_helpful_base_test.jsonl.gz`): `{"chosen", "rejected"}` dialogues in the
  `\\n\\nHuman: ...\\n\\nAssistant: ...` format that share everything up to the final assistant reply. Records
  that are identical, or that diverge before the final assistant turn, are skipped and counted by reason.
- AlpacaEval outputs (`eval/alpaca_eval_805_*.json`): a JSON list of `{instruction, output, generator, dataset}`.
- MT-Bench questions (`eval/mt_bench_questions.jsonl`): `{question_id, category, turns: [t1, t2]}`.
- Self-Instruct tasks (`eval/selfinstruct_user_oriented_252.jsonl`): `{id, instruction, instances: [{input,
  output}]}`; the prompt is the instruction followed by the first instance's input, when it has one.
- Scored judgments for `srlm eval agreement`: JSONL of ranked `{"ranks": [...], "scores": [...]}` (plus any of
  `prompt`, `responses`) or pair `{"chosen_score": x, "rejected_score": y}` records; null = invalid judgment.

Every reader takes `.gz` too, and bad input raises `DataError` naming the file and the line (or record index);
bytes are decoded here, so a line that is not UTF-8 is named with its file, line and column.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from srlm_fast.eval.metrics import RankedJudgment
from srlm_fast.io import DataError, read_json, read_jsonl_numbered

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_TURN_RE = re.compile(r"\n\n(Human|Assistant):")


@dataclass(frozen=True)
class RankedPrompt:
    """A prompt with several responses and their human ranks (0 = best); `history` = earlier (role, text) turns."""

    prompt: str
    responses: tuple[str, ...]
    ranks: tuple[int, ...]
    history: tuple[tuple[str, str], ...] = ()
    source: str = ""

    @property
    def instruction(self) -> str:
        """The text a judge sees as the instruction: the prompt, after the earlier turns when there are any."""
        return render_dialogue(self.history, self.prompt)


@dataclass(frozen=True)
class PreferencePair:
    """A prompt with a human-chosen and a human-rejected final reply."""

    prompt: str
    chosen: str
    rejected: str
    history: tuple[tuple[str, str], ...] = ()
    source: str = ""

    @property
    def instruction(self) -> str:
        return render_dialogue(self.history, self.prompt)


@dataclass(frozen=True)
class PairSet:
    """Pairs read from a file, and how many records were skipped, by reason."""

    pairs: list[PreferencePair]
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalPrompt:
    """A held-out prompt; `reference` is a reference answer when the file has one (AlpacaEval, Self-Instruct)."""

    id: str
    instruction: str
    category: str = ""
    reference: str | None = None
    generator: str = ""


def render_dialogue(history: tuple[tuple[str, str], ...], prompt: str) -> str:
    """Earlier turns as `User:`/`Assistant:` lines, then the prompt; just the prompt for a single turn."""
    if not history:
        return prompt
    names = {"prompter": "User", "user": "User", "human": "User", "assistant": "Assistant"}
    lines = [f"{names.get(role.lower(), role)}: {text}" for role, text in history]
    return "\n\n".join([*lines, f"User: {prompt}"])


# ---------------------------------------------------------------- low-level JSON(L) reading


def _iter_records(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL(.gz) file; bad lines raise DataError."""
    return read_jsonl_numbered(path)[0]


def _need_str(obj: dict, key: str, where: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(v).__name__}")
    return v


# ---------------------------------------------------------------- OpenAssistant ranked trees


def read_oasst_trees(
    path: str | os.PathLike, *, first_turn_only: bool = True, min_responses: int = 2
) -> list[RankedPrompt]:
    """Ranked prompts from OpenAssistant message trees (one tree per line; see the module docstring)."""
    out: list[RankedPrompt] = []
    for lineno, obj in _iter_records(path):
        where = f"{path}:{lineno}"
        root = obj.get("prompt", obj)
        if not isinstance(root, dict):
            raise DataError(f"{where}: field 'prompt' must be a message object, got {type(root).__name__}")
        tree_id = str(obj.get("message_tree_id", root.get("message_id", lineno)))
        _walk_oasst(root, (), where, tree_id, first_turn_only, min_responses, out)
    return out


def _walk_oasst(
    msg: dict,
    history: tuple[tuple[str, str], ...],
    where: str,
    tree_id: str,
    first_turn_only: bool,
    min_responses: int,
    out: list[RankedPrompt],
) -> None:
    text = _need_str(msg, "text", f"{where}: message {msg.get('message_id', '?')}")
    replies = msg.get("replies", [])
    if not isinstance(replies, list) or not all(isinstance(r, dict) for r in replies):
        raise DataError(f"{where}: message {msg.get('message_id', '?')}: 'replies' must be a list of objects")
    ranked: list[tuple[int, str]] = []
    for r in replies:
        if r.get("deleted") is True:
            continue
        rank = r.get("rank")
        if rank is None:
            continue
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise DataError(
                f"{where}: message {r.get('message_id', '?')}: 'rank' must be an integer >= 0, got {rank!r}"
            )
        ranked.append((rank, _need_str(r, "text", f"{where}: message {r.get('message_id', '?')}")))
    if len(ranked) >= min_responses:
        out.append(
            RankedPrompt(
                prompt=text,
                responses=tuple(t for _, t in ranked),
                ranks=tuple(k for k, _ in ranked),
                history=history,
                source=f"{tree_id}:{msg.get('message_id', '')}",
            )
        )
    if first_turn_only:
        return
    for reply in replies:
        if reply.get("deleted") is True or not isinstance(reply.get("text"), str):
            continue
        turn = (*history, ("prompter", text), ("assistant", reply["text"]))
        for follow_up in reply.get("replies", []) or []:
            if isinstance(follow_up, dict) and follow_up.get("deleted") is not True:
                _walk_oasst(follow_up, turn, where, tree_id, first_turn_only, min_responses, out)


# ---------------------------------------------------------------- HH-RLHF chosen/rejected


def split_hh_pair(chosen: str, rejected: str) -> tuple[PreferencePair | None, str]:
    """Split two HH-RLHF dialogues into their shared prompt and the two final replies.

    Returns (pair, "") or (None, reason) with reason one of `identical`, `no_shared_prompt`,
    `diverges_before_last_turn`, `empty_reply`.
    """
    if chosen == rejected:
        return None, "identical"
    cut = chosen.rfind(ASSISTANT, 0, _common_prefix_len(chosen, rejected))
    if cut < 0:
        return None, "no_shared_prompt"
    tail = cut + len(ASSISTANT)
    c, r = chosen[tail:].strip(), rejected[tail:].strip()
    if any(m in x for x in (c, r) for m in (HUMAN, ASSISTANT)):
        return None, "diverges_before_last_turn"
    if not c or not r:
        return None, "empty_reply"
    turns = _parse_hh_turns(chosen[:cut])
    if not turns or turns[-1][0] != "human":
        return None, "no_shared_prompt"
    return PreferencePair(prompt=turns[-1][1], chosen=c, rejected=r, history=tuple(turns[:-1])), ""


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _parse_hh_turns(text: str) -> list[tuple[str, str]]:
    parts = _TURN_RE.split(text)
    # parts = [before-first-marker, role, text, role, text, ...]
    return [(parts[i].lower(), parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]


def read_hh_pairs(path: str | os.PathLike) -> PairSet:
    """Chosen/rejected pairs from an HH-RLHF file (`.jsonl` or `.jsonl.gz`), split at the final reply."""
    pairs: list[PreferencePair] = []
    skipped: Counter[str] = Counter()
    for lineno, obj in _iter_records(path):
        where = f"{path}:{lineno}"
        pair, reason = split_hh_pair(_need_str(obj, "chosen", where), _need_str(obj, "rejected", where))
        if pair is None:
            skipped[reason] += 1
            continue
        pairs.append(
            PreferencePair(pair.prompt, pair.chosen, pair.rejected, pair.history, source=f"line {lineno}")
        )
    return PairSet(pairs, dict(sorted(skipped.items())))


# ---------------------------------------------------------------- held-out prompt sets


def read_alpaca_eval(path: str | os.PathLike) -> list[EvalPrompt]:
    """AlpacaEval model outputs: a JSON list of `{instruction, output, generator?, dataset?}`."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    out = []
    for i, rec in enumerate(data):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
        out.append(
            EvalPrompt(
                id=str(i),
                instruction=_need_str(rec, "instruction", where),
                category=str(rec.get("dataset", "")),
                reference=_need_str(rec, "output", where),
                generator=str(rec.get("generator", "")),
            )
        )
    return out


def read_mt_bench(path: str | os.PathLike, *, turn: int = 0) -> list[EvalPrompt]:
    """MT-Bench questions, one turn of each (the first by default: our evaluation is single-turn)."""
    out = []
    for lineno, obj in _iter_records(path):
        where = f"{path}:{lineno}"
        turns = obj.get("turns")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise DataError(f"{where}: field 'turns' must be a non-empty list of strings")
        if turn >= len(turns):
            raise DataError(f"{where}: has {len(turns)} turn(s), turn {turn} requested")
        qid = obj.get("question_id", lineno)
        out.append(EvalPrompt(id=str(qid), instruction=turns[turn], category=str(obj.get("category", ""))))
    return out


def read_selfinstruct(path: str | os.PathLike) -> list[EvalPrompt]:
    """Self-Instruct tasks: instruction + the first instance's input (if any); its output is the reference."""
    out = []
    for lineno, obj in _iter_records(path):
        where = f"{path}:{lineno}"
        instruction = _need_str(obj, "instruction", where).strip()
        instances = obj.get("instances", [])
        if not isinstance(instances, list) or not all(isinstance(x, dict) for x in instances):
            raise DataError(f"{where}: field 'instances' must be a list of objects")
        inp, ref = "", None
        if instances:
            inp = str(instances[0].get("input", "") or "").strip()
            ref = instances[0].get("output")
            ref = ref if isinstance(ref, str) else None
        text = f"{instruction}\n\n{inp}" if inp else instruction
        out.append(EvalPrompt(id=str(obj.get("id", lineno)), instruction=text, reference=ref))
    return out


def read_eval_prompts(path: str | os.PathLike) -> list[EvalPrompt]:
    """Any supported prompt file, recognised by its shape: AlpacaEval `.json`, MT-Bench (`turns`),
    Self-Instruct (`instances`), or plain JSONL with `instruction` or `prompt`."""
    path = Path(path)
    if path.name.endswith((".json", ".json.gz")):
        return read_alpaca_eval(path)
    first = next(iter(_iter_records(path)), None)
    if first is None:
        return []
    keys = first[1]
    if "turns" in keys:
        return read_mt_bench(path)
    if "instances" in keys:
        return read_selfinstruct(path)
    key = "instruction" if "instruction" in keys else "prompt"
    out = []
    for lineno, obj in _iter_records(path):
        text = _need_str(obj, key, f"{path}:{lineno}")
        out.append(EvalPrompt(id=str(obj.get("id", lineno)), instruction=text))
    return out


def alpaca_eval_records(prompts: list[EvalPrompt], outputs: list[str], generator: str) -> list[dict]:
    """Model outputs in AlpacaEval's `model_outputs.json` shape, so the official `alpaca_eval` can score them."""
    if len(prompts) != len(outputs):
        raise ValueError(f"{len(prompts)} prompts but {len(outputs)} outputs")
    return [
        {"dataset": p.category, "instruction": p.instruction, "output": o, "generator": generator}
        for p, o in zip(prompts, outputs)
    ]


# ---------------------------------------------------------------- scored judgments (srlm eval agreement)


@dataclass(frozen=True)
class ScoredJudgments:
    """Ranked prompts with judge scores, and chosen/rejected score pairs, as read from a judgments file."""

    ranked: list[RankedJudgment]
    chosen_scores: list[float | None]
    rejected_scores: list[float | None]


def _score(v: object, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise DataError(f"{where}: a score must be a number or null, got {v!r}")
    return float(v)


def read_scored_judgments(path: str | os.PathLike) -> ScoredJudgments:
    """Read a JSONL of ranked (`ranks`, `scores`) and/or pair (`chosen_score`, `rejected_score`) records."""
    ranked: list[RankedJudgment] = []
    chosen: list[float | None] = []
    rejected: list[float | None] = []
    for lineno, obj in _iter_records(path):
        where = f"{path}:{lineno}"
        if "ranks" in obj:
            ranks, scores = obj.get("ranks"), obj.get("scores")
            if not isinstance(ranks, list) or not isinstance(scores, list) or len(ranks) != len(scores):
                raise DataError(f"{where}: 'ranks' and 'scores' must be lists of the same length")
            if any(isinstance(r, bool) or not isinstance(r, int | float) for r in ranks):
                raise DataError(f"{where}: 'ranks' must be numbers (0 = best)")
            ranked.append(RankedJudgment(ranks, [_score(s, where) for s in scores]))
        elif "chosen_score" in obj and "rejected_score" in obj:
            chosen.append(_score(obj["chosen_score"], where))
            rejected.append(_score(obj["rejected_score"], where))
        else:
            raise DataError(f"{where}: expected 'ranks' + 'scores' or 'chosen_score' + 'rejected_score'")
    return ScoredJudgments(ranked, chosen, rejected)
