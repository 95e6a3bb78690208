"""The training loop and what a run does end to end (nanoGPT-style: one readable loop).

Run = build data -> build model -> train (QAT after `float_warmup_steps`, or `qat_steps` after
      the whole float training) -> evaluate at every eval precision -> run directory + index rows.

Resuming and sharing both rest on one property: the batch, the dropout and the quantization noise
of step t are a pure function of (seed, t) and the RNG state saved in the checkpoint. So
- a killed run resumes from its last checkpoint and ends exactly as an uninterrupted run;
- runs that differ only in technique share their float warm-up: the first run to reach step
  `float_warmup_steps` saves it under `cache/shared/`, and the others start from it;
- `ptq` trains exactly as `float` does, so it reuses float's final weights when they exist, and
  so does every QAT run with `quant.qat_steps` before its QAT steps.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from filelock import FileLock, Timeout
from torch import nn

from qbench.config import (
    Recipe,
    float_training_key,
    load_run_config,
    qat_start,
    total_steps,
    training_key,
    trains_quantized,
    with_evaluation_overrides,
)
from qbench.device import autocast
from qbench.io import atomic_torch_save, load_checkpoint
from qbench.progress import console, make_progress
from qbench.quant import (
    QuantSpec,
    model_size_bits,
    packed_bytes,
    parse_precision,
    quantize_,
    quantizer_parameters,
    use_precision,
)
from qbench.quant.apply import original_name
from qbench.quant.labels import technique_label
from qbench.quant.sensitivity import is_auto, resolve_auto_maps
from qbench.run import distributed
from qbench.run.adopt import adopt_legacy_run, adopt_legacy_shared
from qbench.run.losses import StepLosses, TrainingDiverged
from qbench.store import RunDir, record_results
from qbench.tasks import Task, build_task


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Parameters in a canonical order (by original name), so optimizer state saved before
    quantizers were attached (which renames parameters) loads after, and vice versa."""
    named = sorted(((original_name(n), p) for n, p in model.named_parameters()), key=lambda x: x[0])
    decay = [p for _, p in named if p.ndim >= 2]
    no_decay = [p for _, p in named if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, impl: str = "foreach"
) -> torch.optim.AdamW:
    """AdamW over :func:`_param_groups` (``impl``: train.optimizer_impl). ``foreach``: on the CPU
    torch's default is a Python loop of some ten tensor ops per parameter; the foreach path runs the
    same per-tensor kernels from C++ (the same steps bit for bit). It is torch's default on CUDA
    already. ``fused``: one kernel over all parameters (CUDA and CPU), rounding otherwise."""
    if impl not in ("foreach", "fused"):
        raise ValueError(f"optimizer impl must be foreach or fused, got {impl!r}")
    fused = impl == "fused"
    return torch.optim.AdamW(
        _param_groups(model, weight_decay), lr=lr, foreach=None if fused else True, fused=fused or None
    )


def attach_quantizers(model: nn.Module, optimizer: torch.optim.Optimizer, spec: QuantSpec) -> None:
    """quantize_ + put the learned scales it creates (lsq/pact) in the no-decay group: scheduled
    like every parameter, and the group sizes match a checkpoint saved after quantization."""
    quantize_(model, spec)
    optimizer.param_groups[1]["params"].extend(p for _, p in quantizer_parameters(model))


def lr_lambda(recipe: Recipe):
    """Linear warm-up, then cosine decay to `min_lr_ratio` of the peak. With `quant.qat_lr`, a
    quantization-aware run restarts at that rate when QAT starts and decays to the same floor by
    its last step (with `quant.qat_steps`, the float steps before are float's schedule exactly)."""
    t, q = recipe.train, recipe.quant
    qat_lr = q.qat_lr if trains_quantized(recipe) else None  # set: the restart at QAT start
    start_qat, end = qat_start(recipe), total_steps(recipe)

    def cosine(step: int, start: int, top: float, last: int = t.steps) -> float:
        """From `top` at `start` down to min_lr_ratio at step `last`."""
        progress = min(1.0, (step - start) / max(1, last - start))
        return t.min_lr_ratio + (top - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def f(step: int) -> float:
        if qat_lr is not None and start_qat is not None and step >= start_qat:
            return cosine(step, start_qat, qat_lr / t.lr, end)
        if step < t.warmup:
            return (step + 1) / t.warmup
        return cosine(step, t.warmup, 1.0)

    return f


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int = 0
    quantized: bool = False
    train_seconds: float = 0.0
    curve: list = field(default_factory=list)

    def to_checkpoint(self) -> dict:
        return {
            "step": self.step,
            "quantized": self.quantized,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "train_seconds": self.train_seconds,
            "curve": self.curve,
        }

    def load(self, ckpt: dict, spec: QuantSpec) -> None:
        if ckpt["quantized"] and not self.quantized:
            attach_quantizers(self.model, self.optimizer, spec)  # before the loads: keys, group sizes
            self.quantized = True
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        # The rate of the next step comes from this run's own schedule: a shared float warm-up
        # was saved by whichever run trained it, after its scheduler stepped into its own rate
        # (a quant.qat_lr restart, or float's cosine), which is not this run's.
        sched = self.scheduler
        for group, base, factor in zip(
            self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True
        ):
            group["lr"] = base * factor(sched.last_epoch)
        torch.set_rng_state(ckpt["rng"])
        if ckpt["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.step = ckpt["step"]
        self.train_seconds = ckpt["train_seconds"]
        self.curve = list(ckpt["curve"])


class Runner:
    """Runs one recipe (one grid point) into its run directory."""

    def __init__(
        self, recipe: Recipe, suite: str, results: Path, device: torch.device, progress: bool = True
    ):
        self.recipe = recipe
        self.suite = suite
        self.results = results
        self.device = device
        self.progress = progress
        self.dist = distributed.current()  # data-parallel under torchrun: only rank 0 writes
        run = RunDir(results, suite, recipe)
        self.run: RunDir | distributed.MuteRun = run if self.dist.is_main else distributed.MuteRun(run)
        self.spec = recipe.quant_spec()
        self.shared = results / "cache" / "shared"

    def log(self, msg: str) -> None:
        self.run.log(msg)

    def _save(self, path: Path, state: TrainState) -> None:
        if self.dist.is_main:
            atomic_torch_save(path, state.to_checkpoint())

    def _train_batch(self, task: Task, step: int):
        """The step's batch; data-parallel, this rank's shard of it (None if empty)."""
        if not self.dist.enabled:
            return task.train_batch(step, self.device)
        return task.train_batch(step, self.device, shard=self.dist.shard)

    def _evaluate(self, task: Task, model: nn.Module, split: str, progress: bool = True):
        """Data-parallel, each rank decodes its share of the batches and all get the whole result."""
        if not self.dist.enabled:
            return task.evaluate(model, split, self.device, progress=progress)
        self.dist.broadcast_buffers(model)
        return task.evaluate(model, split, self.device, progress=progress, shard=self.dist.shard)

    # -------------------------------------------------------------- training

    @property
    def _final_file(self) -> Path:
        return self.shared / f"final-{training_key(self.recipe)}.pt"

    @property
    def _prefix_steps(self) -> int:
        """The float steps a run shares with its suite (float and ptq save the float warm-up too)."""
        start = qat_start(self.recipe)
        return self.recipe.quant.float_warmup_steps if start is None else start

    @property
    def _prefix_file(self) -> Path | None:
        """The shared float steps a QAT run starts from: the float run's finished training (with
        `quant.qat_steps`), or the float warm-up of `quant.float_warmup_steps`; None when none."""
        if self.recipe.quant.qat_steps and trains_quantized(self.recipe):
            return self.shared / f"final-{float_training_key(self.recipe)}.pt"
        n = self.recipe.quant.float_warmup_steps
        return self.shared / f"float-{training_key(self.recipe, float_until=n)}.pt" if n > 0 else None

    def _start_point(self) -> tuple[dict | None, str]:
        """Where training starts: own checkpoint > shared final weights > shared warm-up > scratch
        (the shared warm-up also beats an own checkpoint that has not reached its end)."""
        own = load_checkpoint(self.run.checkpoint) if self.run.checkpoint.is_file() else None
        n = self._prefix_steps
        if own is not None and (
            own["step"] >= n or self._prefix_file is None or not self._prefix_file.is_file()
        ):
            return own, "resumed from own checkpoint"
        if self._final_file.is_file():
            return load_checkpoint(self._final_file), "reused identical finished training"
        if self._prefix_file is not None and self._prefix_file.is_file():
            what = "finished float training" if self.recipe.quant.qat_steps else "float warm-up"
            return load_checkpoint(self._prefix_file), f"reused shared {what} ({n} steps)"
        return None, "from scratch"

    def _lock(self, target: Path, what: str) -> FileLock:
        """Hold `target.lock` (an OS file lock: released if the process dies). Runs of one suite in
        parallel processes thus train a shared prefix once: the others wait, then load it."""
        lock = FileLock(str(target) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            self.log(f"waiting for {what}, which another process is training")
            console.print(f"  {self.recipe.run_id}: waiting for {what}, which another process is training")
            lock.acquire()
        return lock

    def _claim_start(self) -> tuple[dict | None, str, dict[str, FileLock]]:
        """The start point, plus the locks this run must hold while it trains what others share:
        `final` (float/ptq: the whole float training) and `prefix` (the float warm-up)."""
        locks: dict[str, FileLock] = {}
        ckpt, how = self._start_point()
        if not trains_quantized(self.recipe) and not self._final_file.is_file():
            locks["final"] = self._lock(self._final_file, "the float training this run shares")
            ckpt, how = self._start_point()
        prefix = self._prefix_file
        start = ckpt["step"] if ckpt else 0
        if prefix is not None and not prefix.is_file() and start < self._prefix_steps:
            locks["prefix"] = self._lock(prefix, "the shared float warm-up")
            ckpt, how = self._start_point()
        return ckpt, how, locks

    def train(self, task: Task) -> TrainState:
        r = self.recipe
        torch.manual_seed(r.seed)
        model = task.build_model().to(self.device)
        optimizer = make_optimizer(model, r.train.lr, r.train.weight_decay, r.train.optimizer_impl)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(r))
        state = TrainState(model, optimizer, scheduler)
        # Data-parallel: rank 0 alone decides (and locks) where training starts, and sends it to all.
        ckpt, how, locks = self._claim_start() if self.dist.is_main else (None, "", {})
        ckpt, how = self.dist.broadcast((ckpt, how))
        try:
            if ckpt is not None:
                state.load(ckpt, self.spec)
            return self._train_loop(task, state, how, locks)
        finally:
            for lock in locks.values():
                lock.release()

    def _train_loop(self, task: Task, state: TrainState, how: str, locks: dict[str, FileLock]) -> TrainState:
        r = self.recipe
        model, optimizer, scheduler = state.model, state.optimizer, state.scheduler
        steps = total_steps(r)
        self.log(f"training {how} at step {state.step}/{steps}")
        console.print(f"  training {how} (step {state.step}/{steps})")

        start_qat = qat_start(r)
        warm = self._prefix_steps
        # train.compile: the forward of the loss through torch.compile, quantizers (parametrizations)
        # inside the graph; attaching them at QAT start recompiles. Checkpoints keep the plain model.
        # (torch.compile of a module is an nn.Module, OptimizedModule; its stub says only a callable)
        # With train.pad_to_multiple the batches come in a few fixed shapes: one graph per shape
        # (dynamic=False) rather than one with symbolic sizes.
        # train.compile_mode "reduce-overhead": the step's forward replayed as CUDA graphs.
        options: dict[str, Any] = {"dynamic": False if r.train.pad_to_multiple else None}
        if r.train.compile_mode != "default":
            options["mode"] = r.train.compile_mode
        forward = cast(nn.Module, torch.compile(model, **options)) if r.train.compile else model
        model.train()
        with make_progress(enabled=self.progress) as bar:
            task_id = bar.add_task(
                f"train {self.run.recipe.run_id}", total=steps, completed=state.step, info=""
            )
            t0 = time.perf_counter() - state.train_seconds
            losses = StepLosses(r.train.log_every, self.device)
            while state.step < steps:
                if start_qat is not None and not state.quantized and state.step >= start_qat:
                    attach_quantizers(model, optimizer, self.spec)
                    state.quantized = True
                batch = self._train_batch(task, state.step)
                with (
                    self.dist.step(model, r.seed, state.step, batched=not r.train.compile),
                    autocast(self.device, r.train.precision),
                ):
                    loss = task.loss(forward, batch) if batch is not None else None
                # the global batch's loss (data-parallel: the sum of the ranks' parts), alike on all ranks
                total = self.dist.sum(
                    loss.detach() if loss is not None else torch.zeros((), device=self.device)
                )
                losses.add(state.step, total)  # checked for NaN at the next read (see StepLosses)
                optimizer.zero_grad(set_to_none=True)
                if loss is not None:
                    loss.backward()
                if self.dist.enabled:
                    self.dist.all_reduce_grads(list(model.parameters()))
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), r.train.grad_clip)
                optimizer.step()
                scheduler.step()
                state.step += 1
                state.train_seconds = time.perf_counter() - t0
                bar.update(task_id, completed=state.step)
                if state.step % r.train.log_every == 0:
                    losses.read()
                    bar.update(task_id, info=f"loss {losses.running:.3f}")
                    self.log(
                        f"step {state.step} loss {losses.last:.4f} avg {losses.running:.4f} "
                        f"grad_norm {float(grad_norm):.2f} lr {scheduler.get_last_lr()[0]:.2e} "
                        f"t {state.train_seconds:.1f}s"
                    )
                if r.train.eval_every and state.step % r.train.eval_every == 0:
                    losses.read()
                    split = r.train.curve_split
                    res = self._evaluate(task, model, split, progress=False)
                    state.curve.append(
                        {
                            "step": state.step,
                            "minutes": state.train_seconds / 60,
                            "split": split,
                            res.metric.name: res.value,
                        }
                    )
                    self.log(f"step {state.step} {split} {res.metric.name} {res.value:.4f}")
                    t0 = time.perf_counter() - state.train_seconds  # evaluation is not training time
                if state.step == warm and not state.quantized and (prefix := self._prefix_file):
                    losses.read()
                    if not prefix.is_file():
                        self._save(prefix, state)
                    if "prefix" in locks:  # the warm-up is saved: runs waiting for it may go on
                        locks.pop("prefix").release()
                if state.step % r.train.checkpoint_every == 0 or state.step == steps:
                    losses.read()
                    self._save(self.run.checkpoint, state)
            losses.read()
        if start_qat is None:
            final = self.shared / f"final-{training_key(r)}.pt"
            if not final.is_file():
                self._save(final, state)
        if trains_quantized(r) and not state.quantized:  # resumed from a finished checkpoint
            attach_quantizers(model, optimizer, self.spec)
            state.quantized = True
        self.dist.broadcast_buffers(model)
        self.dist.check_in_sync(model)
        return state

    # -------------------------------------------------------------- evaluation

    def evaluate(self, task: Task, state: TrainState) -> dict:
        r = self.recipe
        per_precision = {}
        rows = []
        named = self._precision_maps(task, state)
        for name in r.eval.precisions:
            precision = parse_precision(name, named)
            t0 = time.perf_counter()
            with use_precision(state.model, precision, self.spec, cache=True):
                res = self._evaluate(task, state.model, "test")
            # the packed file's bytes (header included): what the leaderboard's size column shows
            size = {
                "total_bits": 8 * packed_bytes(state.model, precision, self.spec),
                "float32_bits": model_size_bits(state.model, "float", self.spec)["float32_bits"],
            }
            per_precision[name] = {
                res.metric.name: res.value,
                **res.details,
                "size_bits": size["total_bits"],
                "float32_bits": size["float32_bits"],
                "eval_seconds": time.perf_counter() - t0,
            }
            if r.eval.hypotheses:
                self.run.write_hypotheses(name, res.rows)
            if res.items and self.dist.is_main:  # every rank holds all items: rank 0 writes them
                self.run.write_items(name, res.items)
            # One index row per metric: the task's headline metric and its secondary ones (CER, chrF).
            metrics = {res.metric.name: (res.value, res.metric.higher_is_better, 1)}
            for m in getattr(task, "secondary_metrics", ()):
                if m.name in res.details:
                    metrics[m.name] = (res.details[m.name], m.higher_is_better, 0)
            rows += [
                {
                    "run_id": r.run_id,
                    "suite": self.suite,
                    "task": r.task,
                    "dataset": task.dataset,
                    "technique": technique_label(r),
                    "train_bits": r.quant.bits,
                    "seed": r.seed,
                    "precision": name,
                    "metric": m,
                    "value": value,
                    "higher_is_better": int(higher),
                    "headline": headline,
                    "size_bits": size["total_bits"],
                    "float32_bits": size["float32_bits"],
                    "extra": None,
                    "run_dir": str(self.run.path),
                    "created": time.time(),
                    "model": r.model.arch,
                    "variant": r.variant,
                }
                for m, (value, higher, headline) in metrics.items()
            ]
            console.print(
                f"  {name:>10}: {res.metric.name} {res.metric.format(res.value):>6}  "
                f"({size['total_bits'] / 8e6:.2f} MB packed)"
            )
        return {"per_precision": per_precision, "rows": rows}

    def _precision_maps(self, task: Task, state: TrainState) -> dict:
        """The recipe's named maps, automatic ones chosen for this trained model (written to
        precision_maps/<name>.json in the run folder; see qbench.quant.sensitivity)."""
        r = self.recipe
        if not any(is_auto(r.precisions.get(p)) for p in r.eval.precisions):
            return r.precisions
        return resolve_auto_maps(
            r.precisions,
            r.eval.precisions,
            state.model,
            self.spec,
            task,
            self.device,
            self.run.path / "precision_maps",
            seed=r.seed,
            log=self.log,
        )

    # -------------------------------------------------------------- the whole run

    def execute(self, task: Task, data_seconds: float = 0.0) -> dict:
        r = self.recipe
        self.run.start(self.device)
        timings: dict[str, float] = {"data_seconds": data_seconds}
        try:
            t0 = time.perf_counter()
            state = self.train(task)
            timings["train_wall_seconds"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ev = self.evaluate(task, state)
            timings["eval_seconds"] = time.perf_counter() - t0
        except TrainingDiverged as e:
            self.run.set_status("failed", reason=str(e))
            self.log(f"FAILED: {e}")
            raise
        except BaseException as e:
            # Interrupted or crashed: keep the checkpoint so the same command resumes.
            self.run.set_status("interrupted", reason=f"{type(e).__name__}: {e}")
            raise
        metrics = {
            "run_id": r.run_id,
            "suite": self.suite,
            "task": r.task,
            "technique": technique_label(r),
            "train_bits": r.quant.bits,
            "seed": r.seed,
            "steps": state.step,
            "train_seconds": state.train_seconds,
            "timings": timings,
            "curve": state.curve,
            "precisions": ev["per_precision"],
            "data": getattr(task, "data_stats", {}),  # recorded sources: utterances kept, items skipped
            "world_size": self.dist.world,  # data-parallel processes (torchrun)
        }
        self.run.write_metrics(metrics)
        if self.dist.is_main:
            record_results(self.results, ev["rows"])
        self.run.set_status("done")
        return metrics


def run_recipe(
    recipe: Recipe,
    suite: str,
    results: Path,
    device: torch.device,
    task: Task | None = None,
    progress: bool = True,
) -> dict:
    """Run one grid point unless it already finished; returns its metrics. One process owns a run
    at a time: another `qbench run` of the same suite waits here for it, then finds it done."""
    runner = Runner(recipe, suite, results, device, progress=progress and distributed.current().is_main)
    with _run_lock(
        results / "runs" / suite / ".locks" / f"{recipe.run_id}.lock", enabled=not runner.dist.enabled
    ):
        if runner.dist.is_main:
            adopt_legacy_run(results, suite, recipe)
        if runner.dist.broadcast(runner.run.status().get("state") == "done"):  # rank 0's folder decides
            console.print(f"[dim]{recipe.run_id}: done, skipped[/dim]")
            if runner.dist.is_main and (hint := _scored_elsewhere(runner.run.path, recipe, suite)):
                console.print(hint, highlight=False)
            return {**(runner.run.metrics() if runner.dist.is_main else {}), "skipped": True}
        t0 = time.perf_counter()
        if task is None:
            task = build_task(recipe, results / "cache", progress=progress)
            if not runner.dist.is_main:  # data-parallel: rank 0 builds the caches, the others then read them
                runner.dist.barrier()
            task.build_data()
            if runner.dist.is_main:
                runner.dist.barrier()
        data_seconds = time.perf_counter() - t0
        console.print(
            f"[bold]{recipe.run_id}[/bold] ({recipe.quant.technique}, {recipe.quant.bits}-bit, seed {recipe.seed})"
        )
        return runner.execute(task, data_seconds)


def _scored_elsewhere(run_dir: Path, recipe: Recipe, suite: str) -> str | None:
    """For a finished run whose recipe now asks for another test split (the same training: run ids
    leave the test split out), the `qbench eval` command that scores it there; None otherwise."""
    done = load_run_config(run_dir / "config.yaml").data.model_dump(mode="json")
    asked = recipe.data.model_dump(mode="json")
    differ = [k for k in sorted(asked) if k != "path" and asked[k] != done.get(k)]
    if not differ:
        return None

    def value(v: object) -> str:  # as `--set` reads it (YAML flow)
        return f"[{','.join(map(str, v))}]" if isinstance(v, list) else str(v)

    sets = " ".join(f"--set 'data.{k}={value(asked[k])}'" for k in differ)
    was = ", ".join(f"data.{k}={value(done.get(k))}" for k in differ)
    return (
        f"  {recipe.run_id} was scored on {was}; score it on this recipe's test split with: "
        f"qbench eval --suite {suite} {sets} --test-set NAME"
    )


@contextlib.contextmanager
def _run_lock(path: Path, enabled: bool) -> Iterator[None]:
    """Hold `path` (an OS file lock, released if the process dies) while a run trains and
    evaluates; data-parallel ranks share their run and take no lock."""
    if not enabled:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        console.print(f"  {path.stem}: another process is running it; waiting", highlight=False)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def load_trained(
    run_dir: Path, results: Path, progress: bool = True, evaluate_on: list[str] | None = None
) -> tuple[Recipe, Task, nn.Module, QuantSpec]:
    """A finished run's recipe, task (data loaded from the cache) and trained model, on the CPU.
    `evaluate_on`: `--set` overrides of the data it is scored on (config.with_evaluation_overrides:
    another test split or data folder; the trained model is the same)."""
    config, ckpt_file = run_dir / "config.yaml", run_dir / "checkpoint.pt"
    if not config.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (needs config.yaml and checkpoint.pt)")
    recipe = load_run_config(config)
    if not ckpt_file.is_file():  # ptq: float's finished training, shared, is its model
        adopt_legacy_shared(results / "cache" / "shared", recipe)
        ckpt_file = results / "cache" / "shared" / f"final-{training_key(recipe)}.pt"
        if not ckpt_file.is_file():
            raise FileNotFoundError(f"{run_dir}: no checkpoint.pt, and no shared finished training for it")
    ckpt = load_checkpoint(ckpt_file)  # a corrupt one fails before any data is built
    if evaluate_on:
        recipe = with_evaluation_overrides(recipe, evaluate_on)
    task = build_task(recipe, results / "cache", progress=progress)
    task.build_data()
    model = task.build_model()
    spec = recipe.quant_spec()
    if ckpt["quantized"]:
        quantize_(model, spec)
    model.load_state_dict(ckpt["model"])
    return recipe, task, model.eval(), spec
