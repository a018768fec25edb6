"""One training loop for SFT and DPO: a plain process or `torchrun` (any number of processes and nodes).

    from srlm_fast.train.trainer import train
    from srlm_fast.train.config import TrainConfig
    final_dir = train(cfg)          # an HF checkpoint directory (weights + config.json + tokenizer.json)

The model is built on the meta device and sharded from outside with FSDP2 (see distributed.py and
losses.py). Losses come from the fused kernels of `srlm_kernels`, so (tokens × vocabulary) logits never
exist:

* SFT: cross-entropy summed over assistant tokens and divided by the GLOBAL number of target tokens of
  the optimizer step (all micro-batches, all ranks; counted and all-reduced before the first forward).
  Every token weighs the same however the batch is split, so 1 process and N processes, or 8
  micro-batches of 1 and 1 of 8, take the same step. FSDP2 sums (not averages) gradients over ranks.
* DPO: chosen and rejected in one forward; reference log-probs precomputed (reference.py), so no
  reference model is held. Each micro-batch's mean-over-pairs loss is weighted by its share of the
  step's pairs.

Checkpoints (`checkpointing.py`: run_dir/checkpoints/step-NNNNNN/, written atomically, `latest` names the newest
good one). A run killed at any moment resumes from `latest`: the data position is the step (data order is a pure
function of the seed), the LR is a function of the step, the optimizer and RNG states are restored, and
`metrics.jsonl` is cut back to the checkpoint's step (no line is ever duplicated). What a run may write, resume
or refuse, and the run directory's lock, are `run_dir.py`'s; this module is the setup, the steps and the loop.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from srlm_fast import distributed as D
from srlm_fast.config import ConfigError, to_dict, to_toml
from srlm_fast.device import resolve_dtype
from srlm_fast.io import (
    DataError,
    OutputError,
    check_output,
    looks_like_jsonl,
    write_json_atomic,
    write_text_atomic,
)
from srlm_fast.model.checkpoint import (
    read_model_config,
    save_pretrained,
)
from srlm_fast.model.config import ModelConfig, get_preset
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.train.checkpointing import (
    check_resumable,
    latest_checkpoint,
    load_checkpoint,
    read_train_state,
    write_checkpoint,
)
from srlm_fast.train.config import TrainConfig
from srlm_fast.train.data import (
    BatchPlan,
    DataStats,
    collate_dpo,
    collate_sft,
    dpo_stream,
    load_dpo,
    load_sft,
    sft_stream,
)
from srlm_fast.train.losses import LMWithLoss, build_lm
from srlm_fast.train.metrics import MetricsLogger, peak_tflops
from srlm_fast.train.reference import (
    attach_and_write,
    provenance_mismatch,
    provenance_path,
    reference_provenance,
    rows_mismatch,
    score_pairs,
)
from srlm_fast.train.run_dir import (
    CONFIG,
    INPUTS,
    check_outputs,
    cut_metrics,
    input_fingerprints,
    lock_run_dir,
    start_over,
)


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm: the run stopped, its last good checkpoint is intact."""


# ---- schedule ------------------------------------------------------------------------------------


def lr_at(step: int, total_steps: int, lr: float, min_lr: float, warmup_steps: int) -> float:
    """Linear warmup to `lr`, then cosine decay to the floor `min_lr` at the last step (step is 0-based)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """One training run (use `train(cfg)`)."""

    def __init__(self, cfg: TrainConfig, info: D.DistInfo, log_stream=None) -> None:
        self.cfg = cfg
        self.info = info
        self.run_dir = Path(cfg.checkpoint.run_dir)
        self.final_dir = Path(cfg.checkpoint.final_dir or self.run_dir / "final")
        self.log = MetricsLogger(self.run_dir, enabled=False, total_steps=0)  # replaced in run()
        self.log_stream = log_stream
        self._final_overwrite = False
        self._notes: list[str] = []  # said once the log is open

    # ---- setup -----------------------------------------------------------------------------------
    def _model_config(self, tokenizer: Tokenizer) -> ModelConfig:
        cfg = self.cfg.model
        if cfg.init is not None:
            mc = read_model_config(cfg.init)
        else:
            mc = get_preset(cfg.preset)
        if tokenizer.vocab_size > mc.vocab_size:
            raise ConfigError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is {mc.vocab_size}"
            )
        if self.cfg.data.max_seq_len > mc.max_seq_len:
            raise ConfigError(
                f"data.max_seq_len={self.cfg.data.max_seq_len} exceeds the model's max_seq_len={mc.max_seq_len}"
            )
        return mc

    def _reference_settings(self) -> dict:
        d = self.cfg.data
        return {"max_seq_len": d.max_seq_len, "overlong": d.overlong, "template": self.tokenizer.template.name,
                "dtype": str(resolve_dtype(self.cfg.model.param_dtype, self.info.device)).removeprefix("torch.")}  # fmt: skip

    def _load_data(self, tokenizer: Tokenizer, *, resumed: bool) -> tuple[list, DataStats, Path | None]:
        d = self.cfg.data
        info = self.info
        kw = dict(
            max_seq_len=d.max_seq_len,
            overlong=d.overlong,
            on_bad_row=d.on_bad_row,
            shard=(info.rank, info.world_size),  # each rank tokenises its share; the results are exchanged
            gather=lambda obj: D.all_gather_objects(obj, info),
        )
        if self.cfg.task == "sft":
            docs, stats = load_sft(d.train, tokenizer, **kw)
            return docs, stats, None
        pairs, stats = load_dpo(d.train, tokenizer, **kw)
        settings = self._reference_settings()
        init = self.cfg.model.init
        if all(p.ref_chosen_logp is not None for p in pairs):
            # The training file carries reference log-probs: when it has a provenance record, they must be this
            # model's, for these settings, and the file unchanged since.
            why = self._agree(lambda: provenance_mismatch(Path(d.train), source=None, checkpoint_dir=init,
                                                          settings=settings))  # fmt: skip
            if why:
                raise DataError(
                    f"{d.train}: its reference log-probs do not fit this run: {why}; recompute them"
                )
            return pairs, stats, None
        ref_path = Path(self.cfg.dpo.reference_out or self.run_dir / "pairs.ref.jsonl")
        if ref_path.is_file():  # computed by an earlier (possibly killed) attempt of this run?
            why = self._agree(lambda: self._reference_mismatch(ref_path, settings))
            if why is None:
                pairs, stats = load_dpo(ref_path, tokenizer, **kw)
                return pairs, stats, None
            if resumed or self.cfg.dpo.reference_out is not None:
                raise DataError(
                    f"{ref_path}: these reference log-probs do not belong to this run: {why}. "
                    + ("The run has trained already, so they cannot be recomputed from the initial model: restore "
                       "the file or start a new run_dir" if resumed else
                       "Remove the file (or set dpo.reference_out elsewhere) to compute them again")
                )  # fmt: skip
            self._notes.append(f"[dpo] {ref_path}: {why}; computing them again")
        if self.cfg.dpo.missing_reference == "error":
            raise DataError(
                f"{d.train}: pairs lack ref_chosen_logp/ref_rejected_logp (dpo.missing_reference=error)"
            )
        if resumed:
            raise DataError(
                f"{ref_path}: reference log-probs are missing but the run has trained already; they must come "
                "from the initial model (restore the file or start a new run_dir)"
            )
        if self.cfg.dpo.reference_out is not None:
            self._agree(lambda: check_output(ref_path, kind="JSONL file", overwrite=True, inputs=[d.train],
                                             is_kind=looks_like_jsonl))  # fmt: skip
        return pairs, stats, ref_path

    def _reference_mismatch(self, ref_path: Path, settings: dict) -> str | None:
        d = self.cfg.data
        if provenance_path(ref_path).is_file():
            return provenance_mismatch(ref_path, source=Path(d.train), checkpoint_dir=self.cfg.model.init,
                                       settings=settings)  # fmt: skip
        return rows_mismatch(ref_path, Path(d.train))  # an older version's file: the rows must be these pairs

    def _optimizer(self, lm: LMWithLoss) -> torch.optim.Optimizer:
        o = self.cfg.optim
        decay = [p for p in lm.parameters() if p.ndim >= 2]
        no_decay = [p for p in lm.parameters() if p.ndim < 2]  # norms: decaying a gain towards 0 is harmful
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        fused = self.info.device.type == "cuda"
        return torch.optim.AdamW(
            groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused, foreach=None if fused else True
        )

    def _total_steps(self, stream, plan: BatchPlan) -> int:
        s = self.cfg.schedule
        if s.max_steps > 0:
            return s.max_steps
        return max(1, math.ceil(s.epochs * stream.rows_per_epoch() / plan.global_rows))

    # ---- checkpointing ---------------------------------------------------------------------------
    def _hf_state(self, lm: LMWithLoss) -> dict:
        full = D.full_state_dict(lm, self.info)
        return {k.removeprefix("model."): v for k, v in full.items()}

    def _save_dtype(self) -> torch.dtype:
        name = self.cfg.model.save_dtype
        if name == "auto":
            name = self.cfg.model.param_dtype
        return resolve_dtype(name, self.info.device)

    def _save_hf(self, lm: LMWithLoss, tokenizer: Tokenizer, dirs: Sequence[Path]) -> None:
        full = self._hf_state(lm)  # collective under FSDP; only rank 0 holds the result
        if self.info.is_main:
            for d in dirs:
                save_pretrained(lm.model, d, tokenizer=tokenizer, state_dict=full, dtype=self._save_dtype(),
                                overwrite=d == self.final_dir and self._final_overwrite)  # fmt: skip

    def save_checkpoint(
        self, lm: LMWithLoss, opt, tokenizer: Tokenizer, step: int, plan: BatchPlan, extra_hf=()
    ) -> None:
        """Checkpoint `step` (see checkpointing.py); its recorded LR is the one the step trained with."""
        o = self.cfg.optim
        write_checkpoint(
            self.run_dir, lm, opt, step, plan, self.info,
            lr=lr_at(step - 1, self.total_steps, o.lr, o.min_lr, o.warmup_steps),
            keep_last=self.cfg.checkpoint.keep_last,
            save_hf=lambda dirs: self._save_hf(lm, tokenizer, dirs), extra_hf=extra_hf,
        )  # fmt: skip

    # ---- the steps ---------------------------------------------------------------------------------
    def _sft_step(self, lm: LMWithLoss, micro: list[list]) -> dict:
        dev, pad = self.info.device, self.tokenizer.pad_id
        batches = [collate_sft(rows, pad) for rows in micro]
        counts = torch.tensor(
            [sum(b.n_targets for b in batches), sum(b.n_tokens for b in batches)], dtype=torch.float64
        )
        n_targets, n_tokens = D.all_reduce_sum(counts, self.info).tolist()
        total = torch.zeros((), dtype=torch.float64, device=dev)
        for b in batches:
            doc_ids = b.doc_ids.to(dev) if b.doc_ids is not None else None
            out = lm(b.input_ids.to(dev), b.targets.to(dev), mode="sft", doc_ids=doc_ids)
            (out["loss_sum"] / n_targets).backward()
            total += out["loss_sum"].detach().double()
        loss = D.all_reduce_sum(total, self.info).item() / n_targets
        return {
            "loss": loss,
            "tokens": n_tokens,
            "target_tokens": n_targets,
            "seq_len": batches[0].input_ids.shape[1],
        }

    def _dpo_step(self, lm: LMWithLoss, micro: list[list], plan: BatchPlan) -> dict:
        dev, pad = self.info.device, self.tokenizer.pad_id
        d = self.cfg.dpo
        opts = dict(
            beta=d.beta, loss_type=d.loss_type, label_smoothing=d.label_smoothing, nll_weight=d.nll_weight
        )
        n_pairs = plan.global_rows
        # Metric sums stay on the device (no host sync per micro-batch); one all-reduce per step. Loss and NLL
        # are over every row; the reward metrics over the rows that state a preference (not replay rows).
        sums = torch.zeros(8, dtype=torch.float64, device=dev)
        seq_len = 0
        for pairs in micro:
            b = collate_dpo(pairs, pad)
            seq_len = max(seq_len, b.input_ids.shape[1])
            out = lm(
                b.input_ids.to(dev), b.targets.to(dev), mode="dpo", ref_chosen=b.ref_chosen.to(dev),
                ref_rejected=b.ref_rejected.to(dev), dpo_options=opts,
            )  # fmt: skip
            share = b.n_pairs / n_pairs  # the kernel's loss is a mean over this micro-batch's pairs
            (out["loss"] * share).backward()
            p = b.n_pairs
            pref = b.preference.to(dev)
            w = pref.to(out["margins"].dtype)  # masks by multiplication: boolean indexing syncs the host
            parts = [
                out["loss"].detach() * p,
                out["nll"] * p,
                torch.tensor(float(b.n_tokens), device=dev),
                pref.sum(),
                ((out["margins"] > 0) & pref).sum(),
                (out["margins"] * w).sum(),
                (out["chosen_rewards"] * w).sum(),
                (out["rejected_rewards"] * w).sum(),
            ]
            sums += torch.stack([x.to(dev, torch.float64) for x in parts])
        s = D.all_reduce_sum(sums, self.info).tolist()
        metrics = {"loss": s[0] / n_pairs, "nll": s[1] / n_pairs, "tokens": s[2], "seq_len": seq_len}
        if s[3]:  # a step of replay rows only has no reward metrics
            n_pref = s[3]
            metrics.update(preference_pairs=int(n_pref), reward_accuracy=s[4] / n_pref, margin=s[5] / n_pref,
                           chosen_reward=s[6] / n_pref, rejected_reward=s[7] / n_pref)  # fmt: skip
        return metrics

    # ---- main ------------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.schedule.seed)
        # Everything that can be refused is checked, and the data read, before anything is written.
        checked = self._agree(lambda: check_outputs(cfg, self.run_dir, self.final_dir))
        fresh, final_is_ours = checked
        self._final_overwrite = final_is_ours or cfg.checkpoint.overwrite
        tok_dir = cfg.model.tokenizer or cfg.model.init
        self.tokenizer = tokenizer = Tokenizer.from_dir(tok_dir, cfg.data.template)
        model_config = self._model_config(tokenizer)
        plan = BatchPlan(cfg.schedule.micro_batch_size, cfg.schedule.grad_accum, info.world_size, info.rank)
        latest = None if fresh or not cfg.checkpoint.resume else latest_checkpoint(self.run_dir)
        if latest is not None:
            self._agree(lambda: check_resumable(latest, plan))
        items, stats, ref_out = self._load_data(tokenizer, resumed=latest is not None)
        stream = (
            sft_stream(items, cfg.data.max_seq_len, cfg.data.pack, cfg.schedule.seed)
            if cfg.task == "sft"
            else dpo_stream(items, cfg.schedule.seed)
        )
        self.total_steps = total = self._total_steps(stream, plan)
        lock = lock_run_dir(self.run_dir, info)
        try:
            # Under the lock the run directory cannot change under us: it must still be as checked.
            again = self._agree(lambda: check_outputs(cfg, self.run_dir, self.final_dir))
            if (
                again != checked
                or (latest_checkpoint(self.run_dir) if latest is not None else None) != latest
            ):
                raise OutputError(f"{self.run_dir}: changed while this run was starting; start it again")
            if info.is_main:
                if cfg.checkpoint.overwrite:
                    start_over(self.run_dir)
                if fresh:  # a continuing run rewrites it once its checkpoint has loaded (see _run)
                    write_text_atomic(self.run_dir / CONFIG, to_toml(cfg))
                if fresh or not (self.run_dir / INPUTS).is_file():
                    write_json_atomic(self.run_dir / INPUTS, input_fingerprints(cfg))
                cut_metrics(self.run_dir, read_train_state(latest)["step"] if latest is not None else 0)
            D.barrier(info)
            return self._run(model_config, items, stats, ref_out, stream, plan, total, latest)
        finally:
            if lock is not None:
                lock.release()

    def _agree(self, fn):
        """`fn()` on rank 0, its result (or its error) on every rank: they fail together, never half of them."""
        result, error = None, None
        if self.info.is_main:
            try:
                result = fn()
            except (ValueError, OSError) as e:
                error = e
        result, error = D.broadcast_object((result, error), self.info)
        if error is not None:
            raise error
        return result

    def _run(self, model_config, items, stats, ref_out, stream, plan, total, latest) -> Path:
        cfg, info, tokenizer = self.cfg, self.info, self.tokenizer
        self.log = log = MetricsLogger(
            self.run_dir, enabled=info.is_main, total_steps=total, config=to_dict(cfg), wandb=cfg.logging.wandb,
            wandb_project=cfg.logging.wandb_project, wandb_run_name=cfg.logging.wandb_run_name,
            wandb_mode=cfg.logging.wandb_mode, stream=self.log_stream,
        )  # fmt: skip
        try:
            for note in self._notes:
                log.info(note)
            log.info(f"[{cfg.task}] {stats.summary()}")
            for err in stats.errors[:5]:
                log.info(f"  skipped: {err}")
            log.info(
                f"[{cfg.task}] {model_config.num_params() / 1e6:.2f}M params, world {info.world_size} on "
                f"{info.device.type}, {plan.global_rows} {'rows' if cfg.task == 'sft' else 'pairs'}/step, "
                f"{total} steps"
            )
            lm = build_lm(
                model_config, info, init_dir=cfg.model.init, init_seed=cfg.model.init_seed,
                attn_backend=cfg.model.attn_backend, activation_checkpointing=cfg.model.activation_checkpointing,
                compile=cfg.model.compile, param_dtype=cfg.model.param_dtype,
                lm_head_low_memory=cfg.model.lm_head_low_memory,
            )  # fmt: skip
            lm.train()
            opt = self._optimizer(lm)  # before any no-grad forward (see distributed.reshard)
            if ref_out is not None:
                log.info(f"[dpo] computing reference log-probs of {len(items)} pairs with the initial model")
                scores = score_pairs(
                    lm, items, info, batch_size=cfg.schedule.micro_batch_size, pad_id=tokenizer.pad_id
                )
                for p, (c, r) in zip(items, scores):
                    p.ref_chosen_logp, p.ref_rejected_logp = c, r
                if info.is_main:
                    record = reference_provenance(cfg.data.train, cfg.model.init, self._reference_settings())
                    attach_and_write(items, scores, cfg.data.train, ref_out, provenance=record)
                    log.info(f"[dpo] reference log-probs written to {ref_out}")
                D.barrier(info)
            start = 0
            if latest is not None:
                start = load_checkpoint(latest, lm, opt, plan, info)
                log.info(f"resumed from {latest} at step {start}")
            # A continuing run records this attempt's settings (only the resumable keys can differ).
            text = to_toml(cfg)
            config = self.run_dir / CONFIG
            if info.is_main and (not config.is_file() or config.read_bytes() != text.encode()):
                write_text_atomic(config, text)
            return self._loop(lm, opt, stream, plan, start, total)
        finally:
            log.close()

    def _loop(self, lm: LMWithLoss, opt, stream, plan: BatchPlan, start: int, total: int) -> Path:
        cfg, info, log = self.cfg, self.info, self.log
        o = cfg.optim
        peak = peak_tflops(info.device, cfg.logging.peak_tflops)
        params = [p for p in lm.parameters()]
        last_saved = start
        for step in range(start, total):
            t0 = time.perf_counter()
            lr = lr_at(step, total, o.lr, o.min_lr, o.warmup_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            micro = plan.micro_batches(stream, step)
            m = self._sft_step(lm, micro) if cfg.task == "sft" else self._dpo_step(lm, micro, plan)
            max_norm = o.grad_clip if o.grad_clip > 0 else float("inf")
            grad_norm = D.full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm)).item()
            if not (math.isfinite(m["loss"]) and math.isfinite(grad_norm)):
                opt.zero_grad(set_to_none=True)
                good = latest_checkpoint(self.run_dir)
                raise TrainingDiverged(
                    f"non-finite {'loss' if not math.isfinite(m['loss']) else 'gradient norm'} at step {step + 1} "
                    f"(loss {m['loss']}, grad norm {grad_norm}); stopped without updating the weights. "
                    f"Last good checkpoint: {good if good is not None else 'none (no checkpoint saved yet)'}, left intact."
                )
            opt.step()
            opt.zero_grad(set_to_none=True)
            if info.device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            done = step + 1
            tps = m["tokens"] / dt
            record = {**m, "lr": lr, "grad_norm": grad_norm, "step_time": dt, "tokens_per_s": tps}
            if peak is not None:
                flops = self._model_flops_per_token(lm, m["seq_len"])
                record["mfu"] = flops * tps / (peak * 1e12 * info.world_size)
            if done % cfg.logging.log_every == 0 or done == total:
                log.log(done, record)
            every = cfg.checkpoint.save_every
            if every > 0 and done % every == 0 and done < total:
                self.save_checkpoint(lm, opt, self.tokenizer, done, plan)
                last_saved = done
            if cfg.checkpoint.kill_after_step == done:
                log.close()
                os.kill(os.getpid(), signal.SIGKILL)  # tests: a crash at an arbitrary point after a save
        if last_saved < total or not (self.final_dir / "config.json").is_file():
            self.save_checkpoint(lm, opt, self.tokenizer, total, plan, extra_hf=[self.final_dir])
        log.info(f"done: {total} steps; weights in {self.final_dir}")
        return self.final_dir

    def _model_flops_per_token(self, lm: LMWithLoss, seq_len: int) -> float:
        return float(lm.model.config.flops_per_token(seq_len))


def train(cfg: TrainConfig, *, log_stream=None) -> Path:
    """Run SFT or DPO as configured; returns the final HF checkpoint directory.

    Call it on every rank under torchrun (or in a plain process). A process group that already exists is
    used and left open; one created here is destroyed on return.
    """
    cfg.validate()
    info = D.init_distributed(cfg.device)
    try:
        return Trainer(cfg, info, log_stream=log_stream).run()
    finally:
        D.shutdown(info)
