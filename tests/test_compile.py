"""train.compile: the training forward goes through torch.compile with the fake-quant ops inside
one graph, and trains as eager does."""

import pytest
import torch

from qbench.config import load_suite
from qbench.quant.techniques import TECHNIQUE_CONFIGS
from qbench.run.engine import run_recipe
from qbench.tasks.mt import MTTask
from tests.test_distributed import TINY_MT, losses

CPU = torch.device("cpu")


#: the techniques without noise: their training is deterministic, so compiled equals eager
DETERMINISTIC = [t for t, cfg in TECHNIQUE_CONFIGS.items() if cfg["estimator"] == "round-ste"]


def test_compiled_training_is_one_graph_and_matches_eager(tmp_path, results, monkeypatch):
    path = tmp_path / "mt.yaml"
    path.write_text(TINY_MT.replace("grid: {quant.technique: [ste, rand]}\n", ""))
    overrides = ["train.steps=4", "quant.float_warmup_steps=2", "eval.precisions=[w4]"]

    def recipes(technique):
        eager = load_suite(path, [*overrides, f"quant.technique={technique}"]).runs[0]
        compiled = load_suite(path, [*overrides, f"quant.technique={technique}", "train.compile=true"]).runs[
            0
        ]
        assert compiled.train.compile and compiled.run_id == eager.run_id  # speed only: the same run
        return eager, compiled

    # Inductor's C++ code generation takes minutes on a shared CPU; dynamo's graph capture with the
    # eager backend is what tells whether the quantizers sit inside the graph: fullgraph=True fails
    # on any graph break.
    calls = []
    original = torch.compile

    def spy(model, **kwargs):
        calls.append(model)
        return original(model, backend="eager", fullgraph=True)

    # every training step's loss, as computed (the log keeps 4 decimals)
    step_losses: list[float] = []
    loss_fn = MTTask.loss
    monkeypatch.setattr(
        MTTask, "loss", lambda self, model, batch: _recorded(loss_fn(self, model, batch), step_losses)
    )
    monkeypatch.setattr(torch, "compile", spy)
    torch._dynamo.reset()
    run_recipe(recipes("rand")[1], "c", tmp_path / "rand", CPU, progress=False)  # topk-lp + noise
    assert len(calls) == 1

    # The same losses as eager, on the techniques without noise: eager training batches the
    # quantizers (qbench.quant.batching), which draws the noise estimator's noise in another order
    # than the compiled graph, which quantizes weight by weight; round-STE's values do not depend
    # on that. The compiled runs share their float warm-up (trained compiled) in `results`, the
    # eager ones theirs (trained eagerly) in `other`.
    other = tmp_path / "eager"
    (other / "cache").mkdir(parents=True)
    for technique in DETERMINISTIC:
        eager, compiled = recipes(technique)
        monkeypatch.setattr(torch, "compile", spy)
        torch._dynamo.reset()  # each run's model is new: its graphs would count as recompiles
        step_losses.clear()
        run_recipe(compiled, "c", results, CPU, progress=False)
        compiled_losses = list(step_losses)
        monkeypatch.setattr(torch, "compile", original)
        if not (other / "cache" / "spm").exists():
            (other / "cache" / "spm").symlink_to(
                (results / "cache" / "spm").resolve(), target_is_directory=True
            )
        step_losses.clear()
        run_recipe(eager, "c", other, CPU, progress=False)
        assert compiled_losses == pytest.approx(step_losses, rel=1e-5), technique
        assert len(step_losses) == (4 if technique == DETERMINISTIC[0] else 2)  # then from the shared warm-up
    assert len(calls) == 1 + len(DETERMINISTIC)
    log = lambda root: (root / "runs/c" / eager.run_id / "train.log").read_text()  # noqa: E731
    assert "reused shared float warm-up" in log(results)
    assert losses(log(results)) == pytest.approx(losses(log(other)), abs=2e-4)


def _recorded(loss: torch.Tensor, into: list[float]) -> torch.Tensor:
    into.append(loss.item())
    return loss


@pytest.mark.parametrize("technique", ["rand", "clip", "lsq"])
def test_conformer_with_quantizers_is_one_graph(technique):
    """The Conformer builds its padding mask from the padded length (torchaudio's forward calls
    lengths.max().item(): a graph break and a host sync per step), so the encoder, the CTC head
    and the quantizers trace as one graph. mse-clip's due ratio search (a branch on its counter)
    and lazy initialisations run before the forward, outside the graph, as the engine does under
    train.compile (batched_quantization(model, enabled=False))."""
    from qbench.quant import QuantSpec, batched_quantization
    from qbench.run.engine import _param_groups, attach_quantizers
    from qbench.tasks.asr import ConformerCTC

    model = ConformerCTC(
        n_mels=16,
        vocab=8,
        d_model=16,
        layers=1,
        heads=2,
        ffn_mult=2,
        conv_kernel=3,
        dropout=0.0,
        subsampling=4,
        utterance_cmn=True,
    ).train()
    attach_quantizers(model, torch.optim.SGD(_param_groups(model, 0.0), lr=0.1), QuantSpec(technique, 4))
    feats, lengths = torch.randn(3, 40, 16), torch.tensor([40, 31, 9])
    torch._dynamo.reset()
    for _ in range(2):  # the second forward (counter advanced, ratios cached) traces alike
        with batched_quantization(model, enabled=False):
            explained = torch._dynamo.explain(model)(feats, lengths)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    model.eval()  # hard rounding: deterministic, so compiled and eager agree
    log_probs, out_lengths = model(feats, lengths)
    torch._dynamo.reset()
    compiled_lp, compiled_lengths = torch.compile(model, backend="eager", fullgraph=True)(feats, lengths)
    assert torch.equal(compiled_lengths, out_lengths)
    assert torch.allclose(compiled_lp, log_probs, atol=1e-5)


def test_quantizers_give_eager_values_and_gradients_when_compiled():
    """Every scale function and estimator traced by dynamo: the same values and gradients as eager,
    bit for bit (the noise drawn from the same seed)."""
    from qbench.quant import QuantSpec
    from qbench.quant.estimators import round_ste
    from qbench.quant.quantizers import make_quantizer

    torch.manual_seed(0)
    w0 = torch.randn(64, 48)
    scale = w0.abs().amax(1) / 9  # smaller than absmax / 7: some weights clip
    weights = torch.arange(48.0)
    cases = {"round-ste": (lambda w, s: round_ste(w, s, 7), (w0, scale))}
    for technique in ("ste", "pqn", "rand", "rand-ste", "lsq", "pact", "clip"):
        q = make_quantizer(QuantSpec(technique, 4), weight=w0).train()
        cases[technique] = (q, (w0,))
    for name, (fn, args) in cases.items():
        results = []
        for compiled in (False, True):
            inputs = [a.clone().requires_grad_() for a in args]
            run = torch.compile(fn, backend="eager", fullgraph=True) if compiled else fn
            torch.manual_seed(1)
            out = run(*inputs)
            (out * weights).sum().backward()
            results.append([out.detach(), *(i.grad for i in inputs)])
        for eager, traced in zip(*results, strict=True):
            assert torch.equal(eager, traced), name


def test_bucketed_training_step_compiles_once_across_batches(tmp_path, results):
    """train.pad_to_multiple: batches of different raw lengths that fall in one bucket have one
    shape, so a static-shape compiled training step (forward, quantizers, SpecAugment, CTC loss)
    compiles once and runs them all without recompiling; the raw batches would recompile."""
    from torch._dynamo.testing import CompileCounter

    from qbench.quant import batched_quantization
    from qbench.run.engine import attach_quantizers, make_optimizer
    from qbench.tasks import build_task
    from tests.conftest import tiny_recipe

    recipe = load_suite(
        tiny_recipe(tmp_path / "r.yaml", technique="lsq"), ["train.pad_to_multiple=128"]
    ).runs[0]
    task = build_task(recipe, results / "cache", progress=False)
    task.build_data()
    torch.manual_seed(0)
    model = task.build_model().train()
    attach_quantizers(model, make_optimizer(model, 1e-3, 0.0), recipe.quant.spec())
    batches = [idx for epoch in range(4) for idx in task._epoch_batches(epoch)]
    shape = lambda b: (b["feats"].shape, b["targets"].shape)  # noqa: E731
    buckets: dict = {}
    for idx in batches:
        buckets.setdefault(shape(task._collate("train", idx, CPU, 128)), []).append(idx)
    same = max(buckets.values(), key=len)[:4]
    raw = {shape(task._collate("train", idx, CPU)) for idx in same}
    assert len(same) >= 3 and len(raw) >= 2, (len(same), raw)  # one bucket, raw shapes that differ

    def step(feats, lengths, targets, target_lengths):
        batch = {"feats": feats, "lengths": lengths, "targets": targets, "target_lengths": target_lengths}
        return task.loss(model, batch)

    def compiles(multiple: int) -> tuple[int, int]:
        """Frames compiled by the first batch, and by all."""
        torch._dynamo.reset()
        counter = CompileCounter()
        run = torch.compile(step, backend=counter, dynamic=False)
        counts = []
        for idx in same:
            b = task._collate("train", idx, CPU, multiple)
            with batched_quantization(model, enabled=False):  # as the engine under train.compile
                loss = run(b["feats"], b["lengths"], b["targets"], b["target_lengths"])
            loss.backward()
            assert torch.isfinite(loss)
            counts.append(counter.frame_count)
        return counts[0], counts[-1]

    first, total = compiles(128)
    assert first >= 1 and total == first
    first, total = compiles(0)
    assert total > first  # the test can fail: unpadded batches recompile
    torch._dynamo.reset()


@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune"])
def test_compile_mode_reaches_torch_compile_and_leaves_the_run_id(tmp_path, results, monkeypatch, mode):
    """train.compile_mode is torch.compile's `mode` (not passed at "default"); speed only, it
    names the same run and training; without train.compile it is an error at its key."""
    from qbench.config import RecipeError, training_key
    from tests.conftest import tiny_recipe

    path = tiny_recipe(tmp_path / "r.yaml", technique="float", steps=2, warmup=0)
    recipe = load_suite(path, ["train.compile=true", f"train.compile_mode={mode}"]).runs[0]
    plain = load_suite(path).runs[0]
    assert recipe.train.compile_mode == mode
    assert recipe.run_id == plain.run_id and training_key(recipe) == training_key(plain)
    calls: list[dict] = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: calls.append(kwargs) or model)
    run_recipe(recipe, "tiny", results, CPU, progress=False)
    assert calls == [{"dynamic": None} if mode == "default" else {"dynamic": None, "mode": mode}]
    if mode != "default":
        with pytest.raises(
            RecipeError,
            match=r"train\.compile_mode: .* is a torch\.compile mode: it needs train\.compile: true",
        ):
            load_suite(path, [f"train.compile_mode={mode}"])
