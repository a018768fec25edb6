"""Configuration of `srlm run`, the self-rewarding loop.

Every default is the embedded default: a tiny Llama trained from scratch on the task world, three iterations,
on a laptop CPU. A TOML file (and `--section.key=value` overrides) changes what differs; unknown keys are errors.
The `sft` and `dpo` tables are passed through to the trainer's `TrainConfig` (see train_config.py), so every
trainer option is available in a loop config too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from srlm_fast.config import ConfigError


@dataclass
class ModelSpec:
    preset: str = "debug"  # architecture of M0 when no checkpoint is given (vocab and length adapted)
    checkpoint: str | None = None  # HF checkpoint directory to start from instead of a random M0
    skip_sft: bool = False  # with `checkpoint`: it already is M1 (an instruction- and judge-tuned model)
    tokenizer: str | None = None  # directory with tokenizer.json; default: the checkpoint's, else trained
    vocab_size: int = 2048  # of the tokenizer trained on the fly
    max_seq_len: int = 512  # of a random M0
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # generation/judging dtype; auto: bf16 on GPU


@dataclass
class SeedSpec:
    source: Literal["tasks", "files"] = "tasks"
    ift_files: list[str] = field(default_factory=list)  # JSONL prompt/response shapes, OpenAssistant files
    eft_files: list[str] = field(default_factory=list)  # JSONL {"prompt","response"} judge examples
    n_ift: int = 9000  # task world: instruction examples
    n_eft: int = 3000  # task world: judge examples (balanced over scores 0..5)
    n_selfinstruct: int = 1500  # few-shot → new-task examples, so M1 can do self-instruct
    n_meft: int = (
        500  # task world: meta-judge examples (a judgment judged), so M1 can meta-judge (judge.meta)
    )
    n_seed_prompts: int = 300  # prompts self-instruct draws its seed shots from


@dataclass
class SelfInstructSpec:
    n_prompts: int = 300
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
    template: str = "compact"  # "compact", "full" or a path to a template file
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
    wandb: WandbSpec = field(default_factory=WandbSpec)
    # Trainer tables (TrainConfig sections): merged over the loop's defaults for SFT and for each DPO stage.
    sft: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)
