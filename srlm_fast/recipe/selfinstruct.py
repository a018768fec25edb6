"""Self-instruct: new prompts from 8-shot prompts, parsed, filtered and de-duplicated against the whole pool.

Few-shot prompt (chat-agnostic plain text; usable as a raw completion prompt or as a user message):

    Write one new task like these.
    Task: <example 1>
    ...
    Task: <example 8>
    Task:

The examples are 6 seed prompts and 2 prompts generated earlier (seed prompts fill in while fewer than 2 exist),
shuffled. The model's continuation up to the first newline is the new prompt.

Near-duplicate removal uses MinHash over word 1- and 2-gram shingles with an LSH index (banding), and confirms
every LSH candidate with the exact Jaccard similarity of the shingle sets, so there are no false positives and the
cost per query is independent of the pool size. Word shingles (not characters) keep "What is 23 plus 41?" and
"What is 23 plus 47?" apart: different numbers are different tasks.
"""

from __future__ import annotations

import itertools
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from srlm_fast.recipe.prompt_shapes import PromptShapes

FEWSHOT_HEADER = "Write one new task like these."
TASK_PREFIX = "Task:"

#: generate_fn(prompts, n, temperature, top_p, max_new_tokens, seed) -> n completions per prompt.
GenerateFn = Callable[..., list[list[str]]]

FILTER_REASONS = ("empty", "too_short", "too_long", "off_shape", "duplicate", "surplus")


# ---------------------------------------------------------------- few-shot prompts and parsing


def build_fewshot_prompt(
    seed_prompts: Sequence[str],
    generated: Sequence[str],
    rng: random.Random,
    n_seed: int = 6,
    n_generated: int = 2,
) -> str:
    """An (n_seed + n_generated)-shot prompt; seed prompts replace generated ones that do not exist yet."""
    k_gen = min(n_generated, len(generated))
    k_seed = min(n_seed + n_generated - k_gen, len(seed_prompts))
    if k_seed + k_gen == 0:
        raise ValueError("self-instruct needs at least one seed prompt")
    shots = rng.sample(list(seed_prompts), k_seed) + rng.sample(list(generated), k_gen)
    rng.shuffle(shots)
    lines = [FEWSHOT_HEADER, *(f"{TASK_PREFIX} {_one_line(s)}" for s in shots), TASK_PREFIX]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    # A shot must stay on one line, or the model learns that tasks end somewhere else than at a newline.
    return " ".join(text.split())


_LEAD_RE = re.compile(r"^\s*(?:task\s*\d*\s*:|\d+[.)]|[-*•])\s*", re.IGNORECASE)


def parse_generated(text: str) -> str:
    """The new prompt in a completion: the first non-empty line, without a repeated `Task:`, numbering or quotes.

    Returns "" when nothing is left (counted as `empty`).
    """
    for line in text.splitlines():
        line = _LEAD_RE.sub("", line.strip()).strip()
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
            line = line[1:-1].strip()
        if line:
            return line
    return ""


def sft_examples(
    pool: Sequence[str], n: int, seed: int = 0, n_seed: int = 3, n_generated: int = 1
) -> list[tuple[str, str]]:
    """(few-shot prompt, next task) pairs from a prompt pool, to teach a small model the self-instruct format.

    A model trained from scratch has never seen lists of tasks; a few of these in its SFT data let it continue
    the few-shot prompt with one new task on one line. The target is never one of its own shots. The shot
    counts must be the loop's (`selfinstruct.n_seed`, `n_generated`: 3 + 1 by default).
    """
    if len(pool) < 2:
        raise ValueError("need at least 2 prompts to build self-instruct examples")
    rng = random.Random(f"selfinstruct-sft:{seed}")
    out = []
    for _ in range(n):
        target = rng.randrange(len(pool))
        rest = [p for i, p in enumerate(pool) if i != target] if len(pool) < 64 else None
        if rest is None:  # large pools: sample shots by index, skipping the target, without copying the pool
            idx = [
                i
                for i in rng.sample(range(len(pool)), min(len(pool), n_seed + n_generated + 1))
                if i != target
            ]
            rest = [pool[i] for i in idx[: n_seed + n_generated]]
        prompt = build_fewshot_prompt(rest, [], rng, n_seed=n_seed + n_generated, n_generated=0)
        out.append((prompt, _one_line(pool[target])))
    return out


# ---------------------------------------------------------------- near-duplicate index


def shingles(text: str) -> frozenset[str]:
    """Word 1- and 2-grams of the lower-cased text; punctuation is dropped but operators are words.

    Keeping `+ - * / = < > % ^` tells "Compute 5 + 3." from "Compute 5 - 3.": different tasks, not duplicates.
    """
    words = re.findall(r"\w+|[-+*/=<>%^]", text.lower())
    return frozenset(words) | frozenset(f"{a} {b}" for a, b in itertools.pairwise(words))


class NearDupIndex:
    """MinHash + LSH index of texts; `add` keeps a text only if no indexed text is a near duplicate.

    A near duplicate has Jaccard similarity >= threshold between word-shingle sets. With `bands` × `rows` = the
    signature length, a pair at similarity J becomes a candidate with probability 1 - (1 - J^rows)^bands
    (16 × 4: 0.99 at J = 0.7, 0.9999 at J = 0.8); candidates are then checked exactly.
    """

    def __init__(self, threshold: float = 0.7, bands: int = 16, rows: int = 4, seed: int = 0) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.bands, self.rows = bands, rows
        self.comparisons = 0  # exact Jaccard checks made: the cost that must not grow with the pool
        gen = np.random.default_rng(seed)
        n = bands * rows
        # Multiply-shift hashing on 64-bit words (wrapping arithmetic), top 32 bits kept: a cheap universal family.
        self._a = gen.integers(1, 2**63, size=n, dtype=np.uint64) | np.uint64(1)
        self._b = gen.integers(0, 2**63, size=n, dtype=np.uint64)
        self._buckets: list[dict[int, list[int]]] = [{} for _ in range(bands)]
        self._sets: list[frozenset[str]] = []
        self._texts: list[str] = []
        self._exact: dict[frozenset[str], int] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def _band_keys(self, sets: Sequence[frozenset[str]]) -> list[list[int]]:
        """For each text, one 64-bit key per LSH band, from MinHash signatures computed in a vectorised pass."""
        n_sig = self.bands * self.rows
        sizes = np.array([max(len(s), 1) for s in sets], dtype=np.int64)
        x = np.fromiter((zlib.crc32(g.encode()) for s in sets for g in (s or ("",))), dtype=np.uint64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        sig = np.empty((n_sig, len(sets)), dtype=np.uint64)
        with np.errstate(over="ignore"):
            # Texts in blocks of 2048: keeps the (n_sig, shingles) temporary small instead of 64x the input.
            for lo in range(0, len(sets), 2048):
                hi = min(lo + 2048, len(sets))
                a, b = starts[lo], starts[hi - 1] + sizes[hi - 1]
                h = np.multiply(self._a[:, None], x[None, a:b])  # (n_sig, S_chunk), wraps mod 2^64
                h += self._b[:, None]
                h >>= np.uint64(32)
                sig[:, lo:hi] = np.minimum.reduceat(h, starts[lo:hi] - a, axis=1)
            sig = sig.T.reshape(len(sets), self.bands, self.rows)  # (n_texts, bands, rows)
            # Fold each band's rows into one 64-bit key (FNV-style); a collision only costs an exact check.
            keys = np.zeros((len(sets), self.bands), dtype=np.uint64)
            for r in range(self.rows):
                keys = (keys * np.uint64(0x100000001B3)) ^ sig[:, :, r]
        return keys.tolist()

    def _find(self, sset: frozenset[str], keys: list[int]) -> int | None:
        hit = self._exact.get(sset)
        if hit is not None:
            return hit
        seen: set[int] = set()
        for band, key in zip(self._buckets, keys):
            for j in band.get(key, ()):
                if j in seen:
                    continue
                seen.add(j)
                self.comparisons += 1
                other = self._sets[j]
                inter = len(sset & other)
                if inter and inter >= self.threshold * (len(sset) + len(other) - inter):
                    return j
        return None

    def add_many(self, texts: Iterable[str], force: bool = False) -> list[str | None]:
        """Index texts in order; for each, None if it was added, else the indexed text it near-duplicates.

        Texts are also compared with the ones before them in the same call. `force=True` indexes everything
        (e.g. the seed prompts) and only reports duplicates.
        """
        texts = list(texts)
        if not texts:
            return []
        sets = [shingles(t) for t in texts]
        out: list[str | None] = []
        for text, sset, keys in zip(texts, sets, self._band_keys(sets)):
            dup = self._find(sset, keys)
            out.append(None if dup is None else self._texts[dup])
            if dup is None or force:
                idx = len(self._sets)
                self._sets.append(sset)
                self._texts.append(text)
                self._exact.setdefault(sset, idx)
                for band, key in zip(self._buckets, keys):
                    band.setdefault(key, []).append(idx)
        return out

    def add(self, text: str) -> bool:
        """Index `text` unless it is a near duplicate; True if it was added."""
        return self.add_many([text])[0] is None


# ---------------------------------------------------------------- filters and the generation loop


@dataclass(frozen=True)
class SelfInstructConfig:
    """Sampling and filter settings (paper: 8-shot with 6 seed + 2 generated, T=0.6, top-p 0.9)."""

    n_seed: int = 6
    n_generated: int = 2
    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 48
    min_words: int = 3
    max_words: int = 30
    min_chars: int = 10
    max_chars: int = 200
    dedup_threshold: float = 0.7
    batch_size: int = 64
    max_rounds: int = 50
    # Keep only prompts worded like a seed prompt (recipe/prompt_shapes.py); None keeps every wording.
    shapes: PromptShapes | None = None


@dataclass
class SelfInstructStats:
    """Counts per filter: what was generated, what each filter removed, and what was kept."""

    generated: int = 0
    kept: int = 0
    removed: Counter = field(default_factory=Counter)
    rounds: int = 0

    def to_dict(self) -> dict:
        return {
            "generated": self.generated,
            "kept": self.kept,
            "removed": {r: self.removed[r] for r in FILTER_REASONS},
            "rounds": self.rounds,
        }


def filter_reason(prompt: str, config: SelfInstructConfig) -> str | None:
    """The reason a parsed prompt fails the length bounds or the shape filter, or None if it passes."""
    if not prompt:
        return "empty"
    n_words = len(prompt.split())
    if n_words < config.min_words or len(prompt) < config.min_chars:
        return "too_short"
    if n_words > config.max_words or len(prompt) > config.max_chars:
        return "too_long"
    if config.shapes is not None and not config.shapes.matches(prompt):
        return "off_shape"
    return None


def filter_prompts(
    candidates: Iterable[str], index: NearDupIndex, config: SelfInstructConfig, stats: SelfInstructStats
) -> list[str]:
    """Parse-checked candidates → the ones passing length bounds and not near-duplicating the pool (indexed)."""
    passed = []
    for text in candidates:
        stats.generated += 1
        reason = filter_reason(text, config)
        if reason is None:
            passed.append(text)
        else:
            stats.removed[reason] += 1
    kept = []
    for text, dup in zip(passed, index.add_many(passed)):
        if dup is None:
            kept.append(text)
        else:
            stats.removed["duplicate"] += 1
    stats.kept += len(kept)
    return kept


def generate_prompts(
    generate_fn: GenerateFn,
    seed_prompts: Sequence[str],
    n: int,
    config: SelfInstructConfig | None = None,
    seed: int = 0,
    pool: Iterable[str] = (),
) -> tuple[list[str], SelfInstructStats]:
    """Up to n new prompts, generated in batches of few-shot prompts until n are kept or max_rounds pass.

    The duplicate index holds the seed prompts, `pool` (e.g. prompts of earlier iterations, or eval prompts that
    must not leak into training) and everything kept so far. Each round calls `generate_fn` once with
    `batch_size` few-shot prompts and n=1, with seed `seed + round`, so a run is reproducible.
    """
    config = config or SelfInstructConfig()
    index = NearDupIndex(threshold=config.dedup_threshold, seed=seed)
    index.add_many(list(seed_prompts) + list(pool), force=True)
    rng = random.Random(f"selfinstruct:{seed}")
    stats = SelfInstructStats()
    kept: list[str] = []
    while len(kept) < n and stats.rounds < config.max_rounds:
        fewshot = [
            build_fewshot_prompt(seed_prompts, kept, rng, config.n_seed, config.n_generated)
            for _ in range(config.batch_size)
        ]
        outs = generate_fn(
            fewshot,
            n=1,
            temperature=config.temperature,
            top_p=config.top_p,
            max_new_tokens=config.max_new_tokens,
            seed=seed + stats.rounds,
        )
        if len(outs) != len(fewshot):
            raise ValueError(f"generate_fn returned {len(outs)} results for {len(fewshot)} prompts")
        stats.rounds += 1
        parsed = [parse_generated(text) for texts in outs for text in texts]
        kept.extend(filter_prompts(parsed, index, config, stats))
    # A final round may overshoot; the surplus is dropped so the count is exactly n when enough were found.
    if len(kept) > n:
        stats.removed["surplus"] += len(kept) - n
        stats.kept = n
    return kept[:n], stats
