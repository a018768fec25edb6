"""`srlm eval`: evaluation from files already on disk (no model needed).

srlm eval agreement --judgments FILE     judge vs human metrics from scored judgments (ranked and/or pairs)
srlm eval head2head --verdicts FILE      win/tie/loss with bootstrap CIs from verdicts in both orders;
                                         with `output` + `reference` fields also the LC win rate vs reference
srlm eval report RUN_DIR                 report.md (+ JSON, SVG plots) from RUN_DIR/eval/m<k>.json
                                         (or RUN_DIR/iter<t>/eval.json)
srlm eval data FILE                      read an evaluation data file and summarize it (checks its format)
srlm eval judge --checkpoint DIR ...     a checkpoint judges human-ranked replies (OASST trees) and/or
                                         HH-RLHF pairs; the paper's agreement metrics (Table 4)
srlm eval versus --a DIR --b DIR ...     A's and B's answers to a prompt file, judged in both orders by a
                                         judge checkpoint (default B); with --references also each model's
                                         win rate (and LC win rate) against the file's reference outputs
srlm eval qa --data FILE [--checkpoint DIR]  retrieval recall@1/5/20 and QA EM/F1 (bootstrap CIs): closed-book,
                                         RAG, oracle and shuffled passage (see commands/_qa.py)

Every input is read and every output checked before a model is loaded (an existing --out or report is replaced
only with --overwrite); the commands that judge report progress (a bar, or a line at least every 30 s).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from srlm_fast.commands._args import (
    add_overwrite,
    device,
    judge_template,
    nonnegative_float,
    nonnegative_int,
    positive_int,
)
from srlm_fast.commands._qa import add_qa_arguments, qa_main
from srlm_fast.device import resolve_device
from srlm_fast.eval import readers as eval_data
from srlm_fast.eval.judge_agreement import (
    head_to_head,
    pointwise_verdict_fn,
    read_eval_prompts,
    reference_win_rate,
)
from srlm_fast.eval.metrics import judge_agreement, pair_agreement
from srlm_fast.eval.readers import read_scored_judgments
from srlm_fast.eval.report import write_report
from srlm_fast.eval.winrate import (
    combine_orders,
    head_to_head_from_verdicts,
    is_flip,
    reference_win_rate_from_outcomes,
)
from srlm_fast.io import DataError, check_output, looks_like_json, read_json, read_jsonl, write_json_atomic
from srlm_fast.model.checkpoint import is_checkpoint_dir
from srlm_fast.recipe.config import JudgeSpec
from srlm_fast.recipe.evaluation import judge_score_fn, judge_vs_humans
from srlm_fast.recipe.policy import Policy

HELP = "evaluate: judge agreement with humans, head-to-head win rates, reports, QA with retrieval"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")
    p = sub.add_parser("agreement", help="judge agreement metrics from a JSONL of scored judgments")
    p.add_argument(
        "--judgments", required=True, help="JSONL: {ranks, scores} and/or {chosen_score, rejected_score}"
    )
    p.add_argument(
        "--perfect",
        type=nonnegative_float,
        default=5.0,
        help="score that counts as a perfect 5 (default 5.0)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("head2head", help="win/tie/loss with bootstrap CIs from verdicts in both orders")
    p.add_argument("--verdicts", required=True, help='JSONL: {verdict_ab, verdict_ba} in "1"/"2"/"tie"/null')
    p.add_argument("--n-boot", type=positive_int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("report", help="write RUN_DIR/report.md from the per-model evaluation files")
    p.add_argument("run_dir", help="the run directory (reads eval/m<k>.json or iter<t>/eval.json)")
    p.add_argument("--title", default=None, help="report title (default: the run directory name)")
    add_overwrite(p, "report.md")
    p = sub.add_parser("data", help="read an evaluation data file and summarize it")
    p.add_argument(
        "file", help="OpenAssistant trees, HH-RLHF pairs, AlpacaEval, MT-Bench or Self-Instruct file"
    )
    p.add_argument("--kind", choices=("auto", "oasst", "hh", "prompts"), default="auto")
    p = sub.add_parser(
        "judge", help="a checkpoint as judge: agreement with human rankings and preference pairs"
    )
    p.add_argument("--checkpoint", required=True, help="HF checkpoint directory (the judge)")
    p.add_argument(
        "--rankings", default=None, help="OpenAssistant trees JSONL (e.g. prefs/oasst_en_100_trees.jsonl)"
    )
    p.add_argument("--pairs", default=None, help="HH-RLHF chosen/rejected JSONL(.gz)")
    p.add_argument("--mode", choices=("sample", "expected"), default="sample")
    p.add_argument("--k", type=positive_int, default=3, help="judgments averaged per response in sample mode")
    p.add_argument("--template", default="full", help="judge template: compact, full, or a file")
    p.add_argument("--max-new-tokens", type=positive_int, default=256)
    p.add_argument(
        "--limit", type=nonnegative_int, default=0, help="at most this many prompts/pairs per file (0: all)"
    )
    p.add_argument("--device", type=device, default="auto")
    p.add_argument("--out", default=None, help="also write the metrics as JSON here")
    add_overwrite(p, "--out file")
    p = sub.add_parser(
        "versus", help="head-to-head of two checkpoints on a prompt file, judged by a checkpoint"
    )
    p.add_argument("--a", required=True, help="checkpoint A (e.g. the older model)")
    p.add_argument("--b", required=True, help="checkpoint B (e.g. the newer model)")
    p.add_argument(
        "--judge", default=None, help="judge checkpoint (default: B, the newer model, as in the paper)"
    )
    p.add_argument(
        "--prompts", required=True, help="AlpacaEval .json, MT-Bench, Self-Instruct or prompt JSONL"
    )
    p.add_argument(
        "--references", action="store_true", help="also judge A and B against the file's references"
    )
    p.add_argument("--limit", type=nonnegative_int, default=0, help="at most this many prompts (0: all)")
    p.add_argument(
        "--temperature", type=nonnegative_float, default=0.0, help="answer sampling temperature (0: greedy)"
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="answer length limit")
    p.add_argument("--judge-mode", choices=("sample", "expected"), default="expected")
    p.add_argument("--template", default="full", help="judge template: compact, full, or a file")
    p.add_argument("--judge-max-new-tokens", type=positive_int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=device, default="auto")
    p.add_argument("--out", default=None, help="write the results (and the answers) as JSON here")
    add_overwrite(p, "--out file")
    add_qa_arguments(sub)


def main(args: argparse.Namespace) -> int:
    handlers = {"agreement": _agreement, "head2head": _head2head, "report": _report, "data": _data,
                "judge": _judge, "versus": _versus, "qa": qa_main}  # fmt: skip
    handler = handlers.get(getattr(args, "eval_command", None) or "")
    if handler is None:
        print("usage: srlm eval {agreement,head2head,report,data,judge,versus,qa} ... (see srlm eval -h)")
        return 2
    return handler(args)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _agreement(args: argparse.Namespace) -> int:
    data = read_scored_judgments(args.judgments)
    if not (data.ranked or data.chosen_scores):
        raise DataError(f"{args.judgments}: no judgments in the file")
    out: dict = {}
    if data.ranked:
        out["ranked"] = judge_agreement(data.ranked, perfect=args.perfect).to_dict()
    if data.chosen_scores:
        out["pairs"] = pair_agreement(data.chosen_scores, data.rejected_scores).to_dict()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if "ranked" in out:
        m = out["ranked"]
        print(f"ranked prompts: {m['n_prompts']} ({m['n_prompts_scored']} fully scored), "
              f"responses {m['n_responses']}, invalid judgments {m['n_invalid']}")  # fmt: skip
        print(f"  pairwise accuracy  {_pct(m['pairwise_accuracy'])}  (ties half {_pct(m['pairwise_accuracy_ties_half'])}, "
              f"without ties {_pct(m['pairwise_accuracy_decided'])}; {m['n_pairs']} pairs, {m['n_pairs_tied']} tied)")  # fmt: skip
        print(f"  5-best             {_pct(m['five_best'])}  ({m['n_perfect']} perfect scores)")
        print(f"  top-1              {_pct(m['top1'])}")
        print(f"  exact match        {_pct(m['exact_match'])}")
        for key in ("spearman", "kendall_tau"):
            v = m[key]
            print(f"  {key:<18} {'–' if v is None else f'{v:.3f}'}")
    if "pairs" in out:
        m = out["pairs"]
        print(f"chosen/rejected pairs: {m['n_pairs']} valid, {m['n_invalid']} with an invalid judgment")
        print(f"  accuracy {_pct(m['accuracy'])}  (without ties {_pct(m['accuracy_decided'])}), "
              f"tie rate {_pct(m['tie_rate'])}")  # fmt: skip
    return 0


def _head2head(args: argparse.Namespace) -> int:
    rows, _ = read_jsonl(args.verdicts, required=("verdict_ab", "verdict_ba"))
    if not rows:
        raise DataError(f"{args.verdicts}: no verdicts in the file")
    ab = [r["verdict_ab"] for r in rows]
    ba = [r["verdict_ba"] for r in rows]
    if rows and all(isinstance(r.get("output"), str) and isinstance(r.get("reference"), str) for r in rows):
        res = reference_win_rate_from_outcomes(
            [combine_orders(x, y) for x, y in zip(ab, ba)],
            [r["output"] for r in rows],
            [r["reference"] for r in rows],
            n_flips=sum(is_flip(x, y) for x, y in zip(ab, ba)),
            n_boot=args.n_boot,
            seed=args.seed,
        )
        out, h2h = res.to_dict(), res.head_to_head
    else:
        h2h = head_to_head_from_verdicts(ab, ba, n_boot=args.n_boot, seed=args.seed)
        out = h2h.to_dict()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"prompts {h2h.n}: {h2h.n_valid} valid, {h2h.n_invalid} invalid, {h2h.n_flips} flipped with the order"
    )
    for name in ("win", "tie", "loss", "win_rate"):
        iv = getattr(h2h, name)
        print(f"  {name:<9} {_pct(iv.value)}  [{_pct(iv.low)}, {_pct(iv.high)}]")
    if "lc_win_rate" in out:
        ls = out["lengths"]
        print(f"  LC win rate {_pct(out['lc_win_rate'])} (length coef {out['length_coef']:.3f}); mean length "
              f"{ls['mean_len']:.0f} vs reference {ls['mean_ref_len']:.0f} chars")  # fmt: skip
    return 0


def _number_key(path: Path) -> tuple[int, str]:
    m = re.search(r"(\d+)$", path.stem if path.name != "eval.json" else path.parent.name)
    return (int(m.group(1)) if m else 1 << 30, str(path))


def find_eval_files(run_dir: Path) -> list[tuple[str, Path]]:
    """(label, path) of a run's per-model evaluations: `eval/m<k>.json` (label M<k>, the loop's layout),
    else `iter<t>/eval.json` (label iter<t>); in numeric order."""
    per_model = sorted(run_dir.glob("eval/m*.json"), key=_number_key)
    if per_model:
        return [(p.stem.upper(), p) for p in per_model]
    return [(p.parent.name, p) for p in sorted(run_dir.glob("iter*/eval.json"), key=_number_key)]


def _report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    files = find_eval_files(run_dir)
    if not files:
        raise DataError(f"{run_dir}: no evaluations to report (eval/m<k>.json or iter<t>/eval.json)")
    run_metrics = []
    for label, path in files:
        d = read_json(path)
        if not isinstance(d, dict):
            raise DataError(f"{path}: expected a JSON object")
        d.setdefault("iteration", label)
        run_metrics.append(d)
    check_output(run_dir / "report.md", kind="report", overwrite=args.overwrite)
    md = write_report(run_metrics, run_dir, title=args.title or f"Run report: {run_dir.name}")
    print(f"wrote {md} ({len(run_metrics)} iteration(s))")
    return 0


def _data(args: argparse.Namespace) -> int:
    path = Path(args.file)
    kind = args.kind
    if kind == "auto":
        name = path.name.lower()
        kind = "oasst" if "tree" in name or "oasst" in name else "hh" if "hh" in name else "prompts"
    if kind == "oasst":
        ranked = eval_data.read_oasst_trees(path)
        n = sum(len(p.responses) for p in ranked)
        print(f"{path}: {len(ranked)} ranked prompts, {n} responses")
    elif kind == "hh":
        ps = eval_data.read_hh_pairs(path)
        print(f"{path}: {len(ps.pairs)} chosen/rejected pairs; skipped {ps.skipped or 'none'}")
    else:
        prompts = eval_data.read_eval_prompts(path)
        refs = sum(p.reference is not None for p in prompts)
        print(f"{path}: {len(prompts)} prompts, {refs} with a reference answer")
    return 0


def _checkpoint(path: str, flag: str) -> str:
    if not is_checkpoint_dir(path):
        raise ValueError(f"{flag}: {path}: not a checkpoint directory (config.json + model.safetensors)")
    return path


def _judge(args: argparse.Namespace) -> int:
    if not (args.rankings or args.pairs):
        raise ValueError("give --rankings and/or --pairs")
    # Before the model is loaded: the output, the judge, the template and the data files (read in full).
    if args.out:
        check_output(args.out, kind="JSON file", overwrite=args.overwrite, is_kind=looks_like_json,
                     inputs=[args.checkpoint, args.rankings, args.pairs])  # fmt: skip
    _checkpoint(args.checkpoint, "--checkpoint")
    judge_template(args.template)
    if args.rankings and not eval_data.read_oasst_trees(args.rankings):
        raise DataError(f"{args.rankings}: no ranked prompts (a prompt with two or more ranked replies)")
    if args.pairs and not eval_data.read_hh_pairs(args.pairs).pairs:
        raise DataError(f"{args.pairs}: no usable chosen/rejected pairs")
    policy = Policy.load(args.checkpoint, device=resolve_device(args.device))
    spec = JudgeSpec(mode=args.mode, k=args.k, template=args.template, max_new_tokens=args.max_new_tokens)
    out: dict = {"checkpoint": str(args.checkpoint), "mode": args.mode, "template": args.template}
    # The loop's evaluation of every model calls the same function: the numbers are comparable.
    out.update(judge_vs_humans(policy, spec, rankings=args.rankings, pairs=args.pairs, limit=args.limit))
    out["prompts_skipped_too_long"] = policy.skipped_too_long
    if args.out:
        write_json_atomic(args.out, out)
    print(json.dumps(out, indent=2))
    return 0


def _versus(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if args.out:
        check_output(args.out, kind="JSON file", overwrite=args.overwrite, is_kind=looks_like_json,
                     inputs=[args.a, args.b, args.judge, args.prompts])  # fmt: skip
    for path, flag in ((args.a, "--a"), (args.b, "--b"), (args.judge, "--judge")):
        if path is not None:
            _checkpoint(path, flag)
    judge_template(args.template)
    prompts = read_eval_prompts(args.prompts)[: args.limit or None]
    if not prompts:
        raise DataError(f"{args.prompts}: no prompts in the file")
    instructions = [p.instruction for p in prompts]
    if args.references and any(p.reference is None for p in prompts):
        raise ValueError(f"{args.prompts}: --references needs a reference output for every prompt")

    def answers(checkpoint: str) -> list[str]:
        # One model in memory at a time: answer, free, then the next.
        policy = Policy.load(checkpoint, device=device)
        try:
            with policy.progress(f"answers of {checkpoint}"):
                outs = policy.generate(instructions, n=1, temperature=args.temperature, top_p=1.0,
                                       max_new_tokens=args.max_new_tokens, seed=args.seed)  # fmt: skip
        finally:
            policy.close()
        return [o[0] for o in outs]

    answers_a, answers_b = answers(args.a), answers(args.b)
    judge_dir = args.judge or args.b
    judge_policy = Policy.load(judge_dir, device=device)
    spec = JudgeSpec(
        mode=args.judge_mode, k=3, template=args.template, max_new_tokens=args.judge_max_new_tokens
    )
    verdict_fn = pointwise_verdict_fn(judge_score_fn(judge_policy, spec))
    out: dict = {"a": args.a, "b": args.b, "judge": judge_dir, "prompts": args.prompts, "n": len(prompts)}
    with judge_policy.progress("judging"):
        out["a_vs_b"] = head_to_head(instructions, answers_a, answers_b, verdict_fn, seed=args.seed).to_dict()
        if args.references:
            refs = [p.reference for p in prompts]
            for name, outs in (("a", answers_a), ("b", answers_b)):
                out[f"{name}_vs_reference"] = reference_win_rate(
                    instructions, outs, refs, verdict_fn, seed=args.seed
                ).to_dict()
    out["prompts_skipped_too_long"] = judge_policy.skipped_too_long
    print(json.dumps(out, indent=2))
    if args.out:
        write_json_atomic(args.out, {**out, "answers": [{"instruction": i, "a": a, "b": b}
                                                        for i, a, b in zip(instructions, answers_a, answers_b)]})  # fmt: skip
    return 0
