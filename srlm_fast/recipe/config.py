"""Configuration of `srlm run`, the self-rewarding loop.

Every default is the embedded default: a tiny Llama trained from scratch on the task world, three iterations,
on a laptop CPU. A TOML file (and `--section.key=value` overrides) changes what differs; unknown keys are errors.
The `sft` and `dpo` tables are passed through to the trainer's `TrainConfig` (see train_config.py), so every
trainer option is available in a loop config too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from srlm_fast.config import ConfigError, finite, from_dict, merge, require
from srlm_fast.device import resolve_device
from srlm_fast.model.checkpoint import is_checkpoint_dir
from srlm_fast.model.config import PRESETS
from srlm_fast.model.tokenizer import SPECIAL_TOKENS
from srlm_fast.recipe.judge import GROUNDED_VARIANT, NAMED_TEMPLATES, JudgeTemplate
from srlm_fast.recipe.task_families import FAMILY_NAMES
from srlm_fast.retrieval.base import read_manifest
from srlm_fast.train.config import TrainConfig


@dataclass
class ModelSpec:
    preset: str = "debug"  # architecture of M0 when no checkpoint is given (vocab and length adapted)
    checkpoint: str | None = None  # HF checkpoint directory to start from instead of a random M0
    skip_sft: bool = False  # with `checkpoint`: it already is M1 (an instruction- and judge-tuned model)
    tokenizer: str | None = None  # directory with tokenizer.json; default: the checkpoint's, else trained
    vocab_size: int = 2048  # of the tokenizer trained on the fly
    max_seq_len: int = 512  # of a random M0
    # Of a random M0: one matrix for the input embeddings and the output head (None: the preset's). Tied, the
    # model copies a prompt token by attending to it with a head whose output map is near the identity.
    tie_embeddings: bool | None = None
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # generation/judging dtype; auto: bf16 on GPU


@dataclass
class SeedSpec:
    source: Literal["tasks", "files"] = "tasks"
    ift_files: list[str] = field(default_factory=list)  # JSONL prompt/response shapes, OpenAssistant files
    eft_files: list[str] = field(default_factory=list)  # JSONL {"prompt","response"} judge examples
    n_ift: int = 9000  # task world: instruction examples
    n_eft: int = 3000  # task world: judge examples, scores 0..5 in proportion eft_mix
    # task world: how many judge examples of each score 0..5 per sum(eft_mix) (recipe/task_eft.py: 5 the bare
    # correct answer, 4/3 it padded with fluff, 2 partly right, 1 a wrong bare answer, 0 off-topic)
    eft_mix: list[int] = field(default_factory=lambda: [1, 3, 1, 1, 1, 3])
    # task world: the judge writes its own answer before the score ("Answer: 76\nScore: 1"), reference-guided
    # grading as MT-Bench's judge does for maths; the score then compares two answers instead of verifying one
    eft_reference: bool = False
    # task world: the share of wrong (score 1) judge examples whose answer ignores the prompt (the answer to
    # another task of the family: task_eft.blind_answer), the error an undertrained M1 makes, instead of a near
    # miss (the other element of the list). In the knowledge families: another training fact's answer, which a
    # grounded judge must learn to reject (loop-smollm2-135m-evidence-cpu.toml)
    eft_blind: float = 0.0
    # task world: of the other wrong (score 1) judge examples of word answers (capitals), the share whose answer is
    # the right one misspelled (task_eft.misspelled: "Pokash" for Pokaesh), the error a reading actor makes when it
    # copies a name; a judge never shown one calls it right, the name nearly matching its evidence line
    eft_misspell: float = 0.0
    n_selfinstruct: int = 1500  # few-shot → new-task examples, so M1 can do self-instruct
    n_meft: int = (
        500  # task world: meta-judge examples (a judgment judged), so M1 can meta-judge (judge.meta)
    )
    n_seed_prompts: int = 300  # prompts self-instruct draws its seed shots from
    # task world: the families to sample (empty: task_families.DEFAULT_FAMILIES), e.g. the default ones plus the
    # knowledge families "kb_capital", "kb_river", whose facts only the knowledge corpus holds (retrieval.task_corpus)
    families: list[str] = field(default_factory=list)
    # task world with retrieval.candidates: instruction examples about freshly invented facts, answered from their
    # evidence lines (recipe/task_reading.py), so M1 learns to read evidence instead of memorising the corpus
    n_reading: int = 0
    # task world with retrieval.judge: judge examples about freshly invented facts, right or wrong only by their
    # evidence (recipe/task_reading.py), so the grounded judge learns to check the evidence, not its memory
    # (measured not to matter for SmolLM2-135M, whose grounded judge reads without them)
    n_judge_reading: int = 0


@dataclass
class SelfInstructSpec:
    n_prompts: int = 300
    # Where an iteration's prompts come from: "model" (self-instruct, the paper) or "seed" (n_prompts drawn from
    # the seed prompts, none twice across iterations; NeMo-Aligner's self-rewarding trains on a fixed prompt set).
    # "seed" isolates what the judge teaches from what self-instruct writes, for a model that cannot self-instruct
    # the task world's wordings (SmolLM2 SFT'd on the knowledge families, README).
    source: Literal["model", "seed"] = "model"
    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 32
    # Shots of the few-shot prompt (the paper: 6 seed + 2 generated). 3 + 1 halve the tiny model's self-instruct
    # tokens in SFT and in every round; the task world's wordings are all it needs to see.
    n_seed: int = 3
    n_generated: int = 1
    min_words: int = 3
    max_words: int = 40
    dedup_threshold: float = 0.8
    batch_size: int = 128
    generator: str | None = None  # a fixed checkpoint (as in the paper) instead of the current model
    # Keep only prompts worded like a seed prompt: a word counts as wording if at least this many seed prompts use
    # it (recipe/prompt_shapes.py). 0: off. For task worlds with a few wordings; free-form prompts have no shapes.
    shape_min_count: int = 0


@dataclass
class CandidateSpec:
    n: int = 4
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 32


@dataclass
class JudgeSpec:
    mode: Literal["sample", "expected"] = "expected"
    k: int = 3
    # "compact", "full", their grounded variants "grounded" and "full_grounded" (retrieval.judge; chosen for you
    # from "compact" and "full"), or a path to a template file
    template: str = "compact"
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 40
    # Where the candidates' reward comes from (recipe/rewards.py): "self" (the recipe), or a control arm:
    # "random" (the self-judge's scores shuffled among each prompt's candidates), "oracle" (the task world's
    # checker; the only setting that reads the checker inside the loop).
    reward: Literal["self", "random", "oracle"] = "self"
    # Meta-Rewarding (Wu et al., 2024): the model also judges its own judgments (the meta rubric) and DPO trains
    # the judge on the best vs worst of them, beside the actor's pairs. Needs mode = "expected".
    meta: bool = False
    meta_candidates: int = 400  # candidates per iteration whose alternative judgments are meta-judged
    meta_min_prob: float = (
        0.05  # an alternative judgment is a score the judge gives at least this probability
    )

    def __post_init__(self) -> None:
        if self.meta and self.mode != "expected":
            raise ConfigError(
                "judge.meta: the meta-judge ranks the judge's likely scores; needs judge.mode = 'expected'"
            )


@dataclass
class PairSpec:
    min_margin: float = 0.0
    tier: float = 0.0
    length_control: bool = False
    # Seed examples added to every DPO round as replay rows (chosen = rejected = the seed response): their
    # DPO term is identically zero, so with dpo.dpo.nll_weight > 0 each is an SFT example. They keep what SFT
    # taught on the families a round's pairs leave out (InstructGPT's "PPO-ptx" mix, for DPO). 0: none.
    replay: int = 0
    # Where replay rows come from: "sft", the whole SFT mix (instructions, judge and meta-judge examples,
    # self-instruct shots), so DPO keeps every skill the loop's next round needs; "ift", the instruction
    # examples only (session 6's lever: the self arm then forgot how to self-instruct and judge).
    replay_source: Literal["sft", "ift"] = "sft"
    # Self-consistency filter (recipe/pairs.py): keep a prompt's pair only if at least this many of its candidates
    # give the chosen answer. For short answers (the task world, maths); 0: off.
    min_votes: int = 0
    # Keep a pair only if the judge scores its chosen response at least this (0: off). With 3, the judge's own
    # "correct" threshold, a prompt whose candidates the judge calls all wrong gives no pair: DPO would otherwise
    # train the least bad wrong answer (README, the evidence experiment on SmolLM2). Reads no checker.
    min_chosen: float = 0.0
    # A candidate that answers with a judge's verdict ("Score: 2") scores 0 before pairs are chosen: it can be
    # rejected, never chosen (recipe/pairs.py). A format rule; reads no checker. Measured where verdicts arise:
    # in SmolLM2's evidence loop half of M1's candidates are verdicts (README, "The verdict rule").
    reject_verdicts: bool = False


@dataclass
class EvalSpec:
    """Evaluations of every model M_k, run after the model is made (results in eval/m<k>.json and report.md)."""

    task_world: bool = True  # checker accuracy and judge/checker agreement on held-out task-world prompts
    n_task_prompts: int = 200  # held-out task-world prompts answered greedily by every model
    n_judge_items: int = 240  # held-out candidates of known quality the model judges (judge vs checker)
    max_new_tokens: int = 32
    rankings: str | None = None  # OpenAssistant trees: the model's judge against human rankings (Table 4)
    pairs: str | None = None  # HH-RLHF chosen/rejected: the model's judge against human preferences
    prompts: str | None = None  # prompt file (AlpacaEval, MT-Bench, ...): M_k vs M_{k-1}, judged by M_k
    limit: int = 0  # at most this many prompts / trees / pairs per file (0: all)


@dataclass
class GenerationSpec:
    """How the generation stages (self-instruct, candidates, judge, evaluations) use the ranks of a torchrun job.

    data_parallel: every rank loads the whole model and samples its share of the requests (fastest while the
    model and its KV cache fit on one device). lockstep: the model is FSDP-sharded over the ranks (each holds
    1/world of the weights, gathered block by block in every forward) and all ranks step together, for models too
    large for one device. Either way the results equal a single process's. In one process both mean "the model".
    """

    mode: Literal["data_parallel", "lockstep"] = "data_parallel"
    max_batch: int = 64  # most sequences one rank decodes at once (fewer when the KV cache budget is smaller)
    # Prompt + completion tokens per sequence (0: the model's context, at most 8192). Every cache row reserves this
    # many slots, so a limit near the longest judge prompt fits more rows; longer prompts are skipped and counted.
    max_len: int = 0

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"generation.max_batch: must be at least 1, got {self.max_batch}")
        if self.max_len < 0:
            raise ConfigError(f"generation.max_len: must be 0 (the model's) or positive, got {self.max_len}")


@dataclass
class RetrievalSpec:
    """Retrieved evidence in the loop (recipe/grounding.py; prompt format in recipe/evidence.py). Every use is off
    by default and each is switched on by itself; with all off nothing is read, built or retrieved."""

    # corpus files (.txt, .jsonl {id,title,text}, SQuAD .json), indexed once per run into retrieval/index/
    corpus: list[str] = field(default_factory=list)
    task_corpus: bool = False  # also the task world's knowledge corpus (recipe/task_knowledge.py)
    index: str | None = None  # a built index directory (`srlm index build`) instead of corpus files
    kind: Literal["bm25", "dense", "hybrid"] = "bm25"  # of the index built from the corpus
    embedder: str | None = None  # dense/hybrid: a checkpoint or embedding-model directory
    k: int = 2  # passages per prompt
    max_words: int = 64  # each passage cut to this many words
    candidates: bool = False  # candidates (and the SFT data's IFT prompts) get the prompt's top-k passages
    # With `candidates`: the SFT data's instruction examples carry evidence too, so M1 knows the format before its
    # first candidate. false: M1 never answers with evidence in SFT, and only the loop can teach it to (the
    # experiment "can self-rewarding teach a model to use retrieved evidence", README).
    sft_evidence: bool = True
    # With `candidates`: each candidate prompt's evidence lines in a random order. The retriever puts the asked
    # fact's passage first, so a candidate that copies the first line is right and gets rewarded; shuffled, only
    # reading the line about the asked entity is (bench/reading_transfer.py). Evaluation keeps the retriever's order.
    shuffle_candidates: bool = False
    judge: bool = False  # the judge reads the top-k passages for prompt + response (the grounded rubric)
    # With `judge`: the judge's evidence lines in a random order, in M1's judge examples and in the loop (evaluation
    # keeps the retriever's order). A judge trained on BM25's order checks the first line only (bench/reading_judge.py:
    # balanced accuracy 0.90 with the fact on line 1, 0.45 on line 2). Measured on SmolLM2-135M (README "Shuffling
    # the judge's evidence"): off is better. BM25 ranks the asked entity's passage first for the judge's query, so
    # the first-line check is right in the loop; shuffled, the judge must find the entity's line, does not learn
    # to, and the loop collapses.
    shuffle_judge: bool = False
    # self-instruct writes each new prompt about a sampled passage, its gold evidence (recipe/passage_instruct.py)
    selfinstruct: bool = False

    @property
    def enabled(self) -> bool:
        return self.candidates or self.judge or self.selfinstruct

    @property
    def evidence_in_sft(self) -> bool:
        """Whether the SFT data's instruction prompts carry evidence."""
        return self.candidates and self.sft_evidence

    @property
    def builds_index(self) -> bool:
        """Whether the run builds its own index (from `corpus` and `task_corpus`) into retrieval/index."""
        return self.enabled and self.index is None


@dataclass
class WandbSpec:
    enabled: bool = False
    project: str = "srlm-fast"
    mode: Literal["online", "offline", "disabled"] = "online"


@dataclass
class LoopConfig:
    name: str = "default"
    runs_dir: str = "runs"
    seed: int = 0
    iterations: int = 3
    device: str = "auto"
    model: ModelSpec = field(default_factory=ModelSpec)
    seed_data: SeedSpec = field(default_factory=SeedSpec)
    selfinstruct: SelfInstructSpec = field(default_factory=SelfInstructSpec)
    candidates: CandidateSpec = field(default_factory=CandidateSpec)
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    pairs: PairSpec = field(default_factory=PairSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    retrieval: RetrievalSpec = field(default_factory=RetrievalSpec)
    wandb: WandbSpec = field(default_factory=WandbSpec)
    # Trainer tables (TrainConfig sections): merged over the loop's defaults for SFT and for each DPO stage.
    sft: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)

    def validate(self, train_table: Callable[[str, LoopConfig], dict[str, Any]] | None = None) -> None:
        """Every value of the loop checked before any work, with messages naming the key: counts, sizes, rates,
        names, the files and checkpoints it names, and (with `train_table`, task → the trainer table a stage
        gets) the `sft` and `dpo` trainer tables, so a bad DPO setting is found before SFT, not after it."""
        require(bool(self.name) and "/" not in self.name and self.name not in (".", ".."), "name",
                "must be a plain directory name", self.name)  # fmt: skip
        require(bool(self.runs_dir), "runs_dir", "must be a directory path", self.runs_dir)
        require(self.iterations >= 0, "iterations", "must be >= 0", self.iterations)
        try:
            resolve_device(self.device)
        except ValueError as e:
            raise ConfigError(f"device: {e}") from None
        m = self.model
        require(m.preset in PRESETS, "model.preset", f"must be one of {', '.join(PRESETS)}", m.preset)
        require(m.vocab_size >= 256 + len(SPECIAL_TOKENS), "model.vocab_size",
                f"must be >= {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)", m.vocab_size)  # fmt: skip
        require(m.max_seq_len >= 2, "model.max_seq_len", "must be >= 2", m.max_seq_len)
        if m.checkpoint is not None:
            require(
                is_checkpoint_dir(m.checkpoint),
                "model.checkpoint",
                "not a checkpoint directory",
                m.checkpoint,
            )
        require(m.tie_embeddings is None or m.checkpoint is None, "model.tie_embeddings",
                "shapes a random M0; a checkpoint keeps its own", m.tie_embeddings)  # fmt: skip
        if m.skip_sft:
            require(
                m.checkpoint is not None, "model.skip_sft", "needs model.checkpoint (the M1 to start from)"
            )
        if m.tokenizer is not None:
            require((Path(m.tokenizer) / "tokenizer.json").is_file(), "model.tokenizer", "no tokenizer.json in",
                    m.tokenizer)  # fmt: skip
        d = self.seed_data
        if d.source == "files":
            require(
                bool(d.ift_files), "seed_data.ift_files", "at least one file is needed with source = 'files'"
            )
        for key in ("ift_files", "eft_files"):
            for i, f in enumerate(getattr(d, key)):
                require(Path(f).is_file(), f"seed_data.{key}[{i}]", "no such file", f)
        for key in ("n_ift", "n_eft", "n_selfinstruct", "n_reading", "n_judge_reading"):
            require(getattr(d, key) >= 0, f"seed_data.{key}", "must be >= 0", getattr(d, key))
        require(len(d.eft_mix) == 6 and all(w >= 0 for w in d.eft_mix) and sum(d.eft_mix) > 0,
                "seed_data.eft_mix", "must be 6 non-negative weights (scores 0..5), not all 0", d.eft_mix)  # fmt: skip
        require(finite(d.eft_blind) and 0 <= d.eft_blind <= 1, "seed_data.eft_blind", "must be in [0, 1]",
                d.eft_blind)  # fmt: skip
        require(finite(d.eft_misspell) and 0 <= d.eft_misspell <= 1, "seed_data.eft_misspell", "must be in [0, 1]",
                d.eft_misspell)  # fmt: skip
        require(d.n_seed_prompts >= 1, "seed_data.n_seed_prompts", "must be >= 1", d.n_seed_prompts)
        require(not d.n_reading or (self.retrieval.evidence_in_sft and d.source == "tasks"), "seed_data.n_reading",
                "reading examples are evidence prompts of the task world: needs retrieval.candidates = true, "
                "retrieval.sft_evidence = true and "
                "seed_data.source = 'tasks'", d.n_reading)  # fmt: skip
        require(not self.retrieval.shuffle_candidates or self.retrieval.candidates, "retrieval.shuffle_candidates",
                "orders the candidates' evidence: needs retrieval.candidates = true", True)  # fmt: skip
        require(not self.retrieval.shuffle_judge or self.retrieval.judge, "retrieval.shuffle_judge",
                "orders the judge's evidence: needs retrieval.judge = true", True)  # fmt: skip
        require(not d.n_judge_reading or (self.retrieval.judge and d.source == "tasks"), "seed_data.n_judge_reading",
                "judge reading examples are grounded judge prompts of the task world: needs retrieval.judge = true "
                "and seed_data.source = 'tasks'", d.n_judge_reading)  # fmt: skip
        unknown = [f for f in d.families if f not in FAMILY_NAMES]
        require(
            not unknown, "seed_data.families", f"unknown families {unknown}; known: {', '.join(FAMILY_NAMES)}"
        )
        si = self.selfinstruct
        for key in ("n_prompts", "max_new_tokens", "n_seed", "batch_size", "min_words"):
            require(getattr(si, key) >= 1, f"selfinstruct.{key}", "must be >= 1", getattr(si, key))
        require(si.n_generated >= 0, "selfinstruct.n_generated", "must be >= 0", si.n_generated)
        require(si.max_words >= si.min_words, "selfinstruct.max_words", "must be >= min_words", si.max_words)
        require(si.shape_min_count >= 0, "selfinstruct.shape_min_count", "must be >= 0", si.shape_min_count)
        require(si.source in ("model", "seed"), "selfinstruct.source", "'model' or 'seed'", si.source)
        # Seed prompts the iterations draw, none twice (stages.self_instruct):
        drawn = self.iterations * si.n_prompts
        require(si.source != "seed" or d.n_seed_prompts >= drawn, "seed_data.n_seed_prompts",
                f"selfinstruct.source = 'seed' draws selfinstruct.n_prompts = {si.n_prompts} unused seed prompts in "
                f"each of {self.iterations} iterations: needs at least {drawn}", d.n_seed_prompts)  # fmt: skip
        require(not (si.source == "seed" and self.retrieval.selfinstruct), "selfinstruct.source",
                "'seed' draws seed prompts; retrieval.selfinstruct writes questions from passages", si.source)  # fmt: skip
        require(not (si.shape_min_count and self.retrieval.selfinstruct), "selfinstruct.shape_min_count",
                "filters wordings of seed prompts; questions written from passages (retrieval.selfinstruct) have "
                "none", si.shape_min_count)  # fmt: skip
        require(finite(si.dedup_threshold) and 0 < si.dedup_threshold <= 1, "selfinstruct.dedup_threshold",
                "must be in (0, 1]", si.dedup_threshold)  # fmt: skip
        if si.generator is not None:
            require(is_checkpoint_dir(si.generator), "selfinstruct.generator", "not a checkpoint directory",
                    si.generator)  # fmt: skip
        c = self.candidates
        require(c.n >= 2, "candidates.n", "must be >= 2 (a pair needs two candidates)", c.n)
        require(c.max_new_tokens >= 1, "candidates.max_new_tokens", "must be >= 1", c.max_new_tokens)
        j = self.judge
        require(j.k >= 1, "judge.k", "must be >= 1", j.k)
        require(j.max_new_tokens >= 1, "judge.max_new_tokens", "must be >= 1", j.max_new_tokens)
        # An M1 that never saw a meta-judge example writes no meta-judgment worth ranking (the arm would train its
        # judge on noise); the task world's examples come from seed_data.n_meft.
        require(not (j.meta and d.source == "tasks" and d.n_meft == 0), "seed_data.n_meft",
                "judge.meta needs meta-judge examples in M1's SFT: seed_data.n_meft > 0", d.n_meft)  # fmt: skip
        if j.template not in NAMED_TEMPLATES:
            require(
                Path(j.template).is_file(), "judge.template", "compact, full or a template file", j.template
            )
            try:
                JudgeTemplate.load(j.template)  # read now: a bad file stops the run before any work
            except ValueError as err:
                raise ConfigError(f"judge.template: {err}") from None
        for section, spec in (("selfinstruct", si), ("candidates", c), ("judge", j)):
            require(finite(spec.temperature) and spec.temperature >= 0, f"{section}.temperature", "must be >= 0",
                    spec.temperature)  # fmt: skip
            require(
                finite(spec.top_p) and 0 < spec.top_p <= 1,
                f"{section}.top_p",
                "must be in (0, 1]",
                spec.top_p,
            )
        p = self.pairs
        require(finite(p.min_margin) and p.min_margin >= 0, "pairs.min_margin", "must be >= 0", p.min_margin)
        require(finite(p.tier) and p.tier >= 0, "pairs.tier", "must be >= 0", p.tier)
        require(finite(p.min_chosen) and p.min_chosen >= 0, "pairs.min_chosen", "must be >= 0", p.min_chosen)
        require(p.replay >= 0, "pairs.replay", "must be >= 0", p.replay)
        require(0 <= p.min_votes <= self.candidates.n, "pairs.min_votes", f"must be in [0, candidates.n = "
                f"{self.candidates.n}]", p.min_votes)  # fmt: skip
        e = self.eval
        for key in ("n_task_prompts", "n_judge_items", "limit"):
            require(getattr(e, key) >= 0, f"eval.{key}", "must be >= 0", getattr(e, key))
        require(e.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1", e.max_new_tokens)
        for key in ("rankings", "pairs", "prompts"):
            f = getattr(e, key)
            if f is not None:
                require(Path(f).is_file(), f"eval.{key}", "no such file", f)
        self._validate_retrieval()
        for task in ("sft", "dpo"):
            table = train_table(task, self) if train_table is not None else getattr(self, task)
            base = {"task": task, "model": {"init": "M"}, "data": {"train": "D"}}
            try:
                trainer = from_dict(TrainConfig, merge(base, table))
                trainer.validate(check_paths=False)
            except ConfigError as err:
                raise ConfigError(f"{task}.{err}") from None
            if task == "dpo" and p.replay:  # the resolved DPO settings: the table's or the trainer's default
                require(trainer.dpo.nll_weight > 0, "pairs.replay",
                        "replay rows train only through the NLL term: set dpo.dpo.nll_weight > 0",
                        trainer.dpo.nll_weight)  # fmt: skip

    def _validate_retrieval(self) -> None:
        """`[retrieval]`: a source for every use that is on, files that exist and read, a judge template that
        reads evidence."""
        r = self.retrieval
        require(r.k >= 1, "retrieval.k", "must be >= 1", r.k)
        require(r.max_words >= 1, "retrieval.max_words", "must be >= 1", r.max_words)
        for i, f in enumerate(r.corpus):
            require(Path(f).is_file(), f"retrieval.corpus[{i}]", "no such file", f)
        if r.index is not None:
            require(not r.corpus and not r.task_corpus, "retrieval.index",
                    "a built index or corpus files (retrieval.corpus, retrieval.task_corpus), not both", r.index)  # fmt: skip
            try:
                read_manifest(r.index)
            except (OSError, ValueError) as err:
                raise ConfigError(f"retrieval.index: {err}") from None
        if r.kind != "bm25":
            require(
                r.embedder is not None, "retrieval.embedder", f"a {r.kind} index needs an embedding model"
            )
        if r.task_corpus:
            require(
                self.seed_data.source == "tasks", "retrieval.task_corpus", "needs seed_data.source = 'tasks'"
            )
        if r.enabled:
            require(bool(r.corpus) or r.task_corpus or r.index is not None, "retrieval",
                    "candidates/judge/selfinstruct need a source: retrieval.corpus, retrieval.task_corpus or retrieval.index")  # fmt: skip
        if r.judge:
            t = self.judge.template
            grounded = t in GROUNDED_VARIANT.values() or (
                t not in NAMED_TEMPLATES and JudgeTemplate.load(t).is_grounded
            )
            require(t in GROUNDED_VARIANT or grounded, "judge.template",
                    "retrieval.judge needs 'compact' or 'full' (their grounded variants are used) or a template "
                    "with {evidence}", t)  # fmt: skip
        elif self.judge.template in GROUNDED_VARIANT.values():
            raise ConfigError(
                f"judge.template: '{self.judge.template}' reads retrieved evidence; needs retrieval.judge = true"
            )
