"""Spelled-out techniques, granularities, globs, a8 activations, 16-bit storage, recipe errors,
`qbench quant inspect` (tiny tensors and models; CPU; a few seconds)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.config import RecipeError
from qbench.quant import (
    QuantSpec,
    export_packed,
    load_packed,
    parse_precision,
    quantize_,
    quantized_parameter_names,
    use_precision,
)
from qbench.quant.activations import fake_quant_per_token, find_act_quantizers
from qbench.quant.estimators import round_ste
from qbench.quant.quantizers import make_quantizer
from qbench.quant.scales import grad_scale, mse_clip_scale
from qbench.quant.techniques import preset_for
from qbench.tasks import load_suite


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ffn = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.out = nn.Linear(16, 5)

    def forward(self, x):  # (B, 4, T)
        h = self.conv(x).transpose(1, 2)
        h = self.attn(h, h, h, need_weights=False)[0]
        return self.out(self.norm(self.ffn(h)))


# --------------------------------------------------------------------------- presets as parts


def test_presets_are_scale_plus_estimator():
    assert preset_for("topk-lp", "noise", False) == "rand"
    assert preset_for("absmax", "noise", True) == "pqn-sg"
    assert preset_for("lsq", "round-ste", False) == "lsq"  # alias of "learned"
    assert preset_for("clip", "round-ste", True) == "clip"  # mse-clip has no gradient either way
    assert preset_for("absmax", "round-ste", True) == "custom"
    custom = QuantSpec("custom", 4, scale="topk-lp", estimator="noise", k=3)
    assert custom.quantizer_options() == QuantSpec("rand").quantizer_options()
    w = torch.randn(6, 20)
    torch.testing.assert_close(
        make_quantizer(custom).scale(w), make_quantizer(QuantSpec("rand", k=3)).scale(w)
    )
    assert QuantSpec("pqn", scale_grad=False).quantizer_options()["detach_scale"] is True
    with pytest.raises(ValueError, match="needs both"):
        QuantSpec("custom", scale="absmax")
    with pytest.raises(ValueError, match="no gradient"):
        QuantSpec("clip", scale_grad=True)
    with pytest.raises(ValueError, match="attaches no quantizer"):
        QuantSpec("float", estimator="noise")


def test_frozen_learned_scale_gets_no_gradient():
    w = torch.randn(5, 12, requires_grad=True)
    for tech in ("lsq", "pact"):
        q = make_quantizer(QuantSpec(tech, 4, scale_grad=False), weight=w.detach()).train()
        q(w).sum().backward()
        assert q.learned.grad is None
        assert w.grad is not None


def test_round_ste_grad_factor_scales_only_the_scale_gradient():
    torch.manual_seed(0)
    w = torch.randn(3, 10)
    g = torch.randn(3, 10)
    grads = []
    for factor in (1.0, 0.25):
        wr, s = w.clone().requires_grad_(), torch.tensor([0.2, 0.1, 0.3], requires_grad=True)
        (round_ste(wr, grad_scale(s, factor), 7) * g).sum().backward()
        grads.append((wr.grad, s.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[1][1], grads[0][1] * 0.25)


# --------------------------------------------------------------------------- granularity


def test_lsq_per_tensor_matches_torch_learnable_per_tensor_kernel():
    torch.manual_seed(1)
    w0 = torch.randn(6, 16)
    q = make_quantizer(
        QuantSpec("lsq", 4, granularity="per-tensor", float_dtype="float32"), weight=w0
    ).train()
    assert q.step.shape == (1,)
    with torch.no_grad():
        q.step.mul_(0.6)
    g = torch.randn(6, 16)
    w = w0.clone().requires_grad_()
    (q(w) * g).sum().backward()
    wr = w0.clone().requires_grad_()
    sr = q.step.detach().clone().requires_grad_()
    ref = torch._fake_quantize_learnable_per_tensor_affine(
        wr, sr, torch.zeros(1), -7, 7, 1.0 / math.sqrt(96 * 7)
    )
    (ref * g).sum().backward()
    torch.testing.assert_close(q(w0).detach(), ref.detach())
    torch.testing.assert_close(w.grad, wr.grad)
    torch.testing.assert_close(q.step.grad, sr.grad)


@pytest.mark.parametrize("technique", ["pqn", "rand", "pact"])
def test_per_group_rows_for_noise_and_pact(technique):
    torch.manual_seed(2)
    w = torch.randn(4, 12)
    q = make_quantizer(QuantSpec(technique, 4, granularity="per-group-4"), weight=w).train()
    s = q.scale(w)
    assert s.shape == (12,)
    out = q(w).view(12, 4)
    if technique == "pact":  # clamp to +-alpha of the group, then round-STE on the group's grid
        a = q.alpha.detach()[:, None]
        clipped = torch.clamp(w.view(12, 4), -a, a)
        expected = torch.round(clipped / s[:, None]).clamp(-7, 7) * s[:, None]
        torch.testing.assert_close(out, expected)
    else:  # noise within half a step of the group's own scale
        assert ((out - w.view(12, 4)).abs() <= s[:, None] / 2 * (1 + 1e-6)).all()


# --------------------------------------------------------------------------- globs


def test_include_exclude_globs_select_by_original_name():
    m = Tiny()
    spec = QuantSpec("ste", 4, include=("ffn.*", "attn.*"), exclude=("*out_proj*",))
    assert quantized_parameter_names(m, spec) == ["attn.in_proj_weight", "ffn.weight"]
    assert quantize_(m, spec) == ["attn.in_proj_weight", "ffn.weight"]
    assert not hasattr(m.conv, "parametrizations") and not hasattr(m.attn.out_proj, "parametrizations")
    # a bare string is one glob, not characters
    assert quantized_parameter_names(Tiny(), QuantSpec("ste", include="out.weight")) == ["out.weight"]


# --------------------------------------------------------------------------- a8 activations


def test_per_token_activation_fake_quant_formula_and_gradient():
    torch.manual_seed(3)
    x = torch.randn(2, 5, 8) * torch.logspace(-3, 2, 5)[None, :, None]
    xr = x.clone().requires_grad_()
    out = fake_quant_per_token(xr)
    s = x.abs().amax(-1, keepdim=True) / 127
    torch.testing.assert_close(out, torch.round(x / s).clamp(-127, 127) * s)
    for tok in out.detach().reshape(-1, 8):
        assert tok.unique().numel() <= 255
    out.backward(torch.ones_like(out))
    assert torch.equal(xr.grad, torch.ones_like(x))  # straight through


def test_a8_hooks_and_precisions():
    torch.manual_seed(4)
    x = torch.randn(2, 4, 9)
    m = Tiny().eval()
    spec = QuantSpec("ste", 4, activations=8)
    quantize_(m, spec)
    acts = find_act_quantizers(m)
    assert sorted(acts) == ["attn", "ffn", "out"]  # not attn.out_proj: attention calls F.linear itself
    with torch.no_grad():
        with use_precision(m, "w4a8", spec):
            y_a8 = m(x)
        with use_precision(m, "w4", spec):
            assert not any(a.enabled for a in acts.values())
            y_w4 = m(x)
            # the same by hand: quantize the inputs of ffn / out
            h = m.conv(x).transpose(1, 2)
            hq = fake_quant_per_token(h)
            h = m.attn(hq, hq, hq, need_weights=False)[0]
            ref = m.out(fake_quant_per_token(m.norm(m.ffn(fake_quant_per_token(h)))))
        assert all(a.enabled for a in acts.values())
        with use_precision(m, "w4a8", spec):
            torch.testing.assert_close(m(x), ref)
    assert not torch.equal(y_a8, y_w4)
    # a float model gets temporary a8 hooks, removed afterwards
    f = Tiny().eval()
    with use_precision(f, "w8a8", QuantSpec("ptq", 8)):
        assert sorted(find_act_quantizers(f)) == ["attn", "ffn", "out"]
    assert find_act_quantizers(f) == {}
    assert parse_precision("w4a8").act_bits == 8 and parse_precision("w4").act_bits is None
    assert parse_precision("mix", {"mix": {"default": 4, "activations": 8}}).act_bits == 8
    for bad in ("w4a4", "w4a16", "a8"):
        with pytest.raises(ValueError):
            parse_precision(bad)


# --------------------------------------------------------------------------- 16-bit storage


def test_quantized_precision_rounds_scales_and_float_tensors_to_bfloat16_and_restores():
    torch.manual_seed(5)
    m = Tiny()
    m.register_buffer("stat", torch.randn(3) * 1.1)
    spec = QuantSpec("lsq", 4)
    quantize_(m, spec)
    snap = {k: v.clone() for k, v in m.state_dict().items()}
    q = m.ffn.parametrizations.weight[0]
    w = m.ffn.parametrizations.weight.original.detach()
    with torch.no_grad(), use_precision(m, "w4", spec):
        s16 = q.step.detach().to(torch.bfloat16).float()
        torch.testing.assert_close(m.ffn.weight, torch.round(w / s16[:, None]).clamp(-7, 7) * s16[:, None])
        assert torch.equal(m.norm.weight, snap["norm.weight"].to(torch.bfloat16).float())
        assert torch.equal(m.ffn.bias, snap["ffn.bias"].to(torch.bfloat16).float())
        assert torch.equal(m.stat, snap["stat"].to(torch.bfloat16).float())
        assert torch.equal(q.step, snap["ffn.parametrizations.weight.0.step"])  # the parameter itself is kept
    with torch.no_grad(), use_precision(m, "float", spec):
        assert torch.equal(m.ffn.bias, snap["ffn.bias"])  # float: full precision
    for k, v in m.state_dict().items():
        assert torch.equal(v, snap[k]), k
    with torch.no_grad(), use_precision(m, "w4", QuantSpec("lsq", 4, float_dtype="float32")):
        assert torch.equal(m.ffn.bias, snap["ffn.bias"])


def test_export_reload_exact_with_buffers_and_mixed_map(tmp_path):
    torch.manual_seed(6)
    m = nn.Sequential(nn.Conv1d(4, 8, 3), nn.BatchNorm1d(8), nn.Conv1d(8, 6, 1))
    m.train()
    m(torch.randn(3, 4, 10))  # running statistics
    m.eval()
    spec = QuantSpec("rand", 4)
    quantize_(m, spec)
    x = torch.randn(2, 4, 10)
    pmap = parse_precision("mix", {"mix": {"default": 4, "2.*": 8}})
    with torch.no_grad(), use_precision(m, pmap, spec):
        expected = m(x)
    meta = export_packed(m, pmap, spec, tmp_path / "m.safetensors")
    assert [(t[0], t[2]) for t in meta["quantized"]] == [("0.weight", 4), ("2.weight", 8)]
    plain = nn.Sequential(nn.Conv1d(4, 8, 3), nn.BatchNorm1d(8), nn.Conv1d(8, 6, 1)).eval()
    load_packed(plain, tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.equal(plain(x), expected)
    assert plain[1].num_batches_tracked.item() == 1


# --------------------------------------------------------------------------- bit widths


@pytest.mark.parametrize("technique", ["lsq", "pact"])
def test_learned_scale_carried_across_bit_widths_by_range(technique):
    torch.manual_seed(7)
    m = nn.Linear(12, 6, bias=False)
    spec = QuantSpec(technique, 8, float_dtype="float32")
    quantize_(m, spec)
    q = m.parametrizations.weight[0]
    w = m.parametrizations.weight.original.detach()
    rng = (q.step.detach() * 127) if technique == "lsq" else q.alpha.detach()  # clipping range
    for prec, qp in (("w4", 7), ("w2", 1), ("w8", 127)):
        with torch.no_grad(), use_precision(m, prec, spec):
            s = rng / qp
            x = torch.clamp(w, -rng[:, None], rng[:, None]) if technique == "pact" else w
            torch.testing.assert_close(m.weight, torch.round(x / s[:, None]).clamp(-qp, qp) * s[:, None])
    assert q.bits == 8


# --------------------------------------------------------------------------- clip search cadence


def test_clip_search_runs_every_clip_every_steps_and_state_dict_carries_it():
    torch.manual_seed(8)
    lin = nn.Linear(16, 6, bias=False)
    spec = QuantSpec("clip", 4, clip_every=3, float_dtype="float32")
    quantize_(lin, spec)
    q = lin.parametrizations.weight[0]
    w = lin.parametrizations.weight.original
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    for step in range(5):
        s = mse_clip_scale(w.detach(), 7)[:, None]
        searched = torch.round(w.detach() / s).clamp(-7, 7) * s
        wq = lin.weight  # one quantizer call per step
        assert torch.equal(wq.detach(), searched) == (step % 3 == 0)  # searched on steps 0 and 3 only
        opt.zero_grad()
        nn.functional.linear(torch.randn(4, 16), wq).pow(2).sum().backward()
        opt.step()
    assert int(q.clip_calls) == 5
    lin.eval()
    torch.testing.assert_close(q.scale(w), mse_clip_scale(w.detach(), 7))  # eval: always searched
    sd = lin.state_dict()
    assert "parametrizations.weight.0.clip_ratio" in sd
    fresh = nn.Linear(16, 6, bias=False)
    quantize_(fresh, spec)
    fresh.load_state_dict(sd)
    assert int(fresh.parametrizations.weight[0].clip_calls) == 5
    old = {k: v for k, v in sd.items() if "clip_" not in k}  # a checkpoint from before the cache
    fresh.load_state_dict(old)


# --------------------------------------------------------------------------- recipes


RECIPE = """\
name: q
task: asr
data: {source: synthetic-speech, train_utterances: 8}
model:
  d_model: 16
  layers: 1
  heads: 2
  conv_kernel: 3
quant:
  technique: ste
  bits: 4
train:
  steps: 10
  batch_size: 4
eval:
  precisions: [float, w4]
"""


def write(tmp_path: Path, quant_extra: str, text: str = RECIPE) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(text.replace("  bits: 4\n", "  bits: 4\n" + quant_extra))
    return p


def test_recipe_spelled_out_quant_is_canonical(tmp_path):
    base = load_suite(write(tmp_path, "")).runs[0]
    rand = load_suite(write(tmp_path, "", RECIPE.replace("technique: ste", "technique: rand"))).runs[0]
    spelled = load_suite(
        write(tmp_path, "  scale: topk-lp\n  estimator: noise\n", RECIPE.replace("  technique: ste\n", ""))
    ).runs[0]
    assert spelled.quant.technique == "rand" and spelled.quant.scale is None
    assert spelled.run_id == rand.run_id
    sg = load_suite(write(tmp_path, "", RECIPE.replace("technique: ste", "technique: pqn"))).runs[0]
    assert sg.quant.technique == "pqn"
    pqn_sg = load_suite(
        write(tmp_path, "  scale_grad: false\n", RECIPE.replace("technique: ste", "technique: pqn"))
    ).runs[0]
    assert pqn_sg.quant.technique == "pqn-sg"
    custom = load_suite(write(tmp_path, "  scale_grad: false\n")).runs[0]
    assert (custom.quant.technique, custom.quant.scale, custom.quant.scale_grad) == (
        "custom",
        "absmax",
        False,
    )
    assert custom.run_id.startswith("custom-w4-") and custom.run_id != base.run_id
    grouped = load_suite(
        write(
            tmp_path, "  granularity: per-group\n  group_size: 8\n  exclude: ['*norm*', '*bias*', '*conv*']\n"
        )
    ).runs[0]

    assert grouped.quant.spec().granularity == "per-group-8"
    a8 = load_suite(
        write(tmp_path, "  activations: a8\n", RECIPE.replace("[float, w4]", "[float, w4a8]"))
    ).runs[0]
    assert a8.quant.spec().activations == 8


BAD = [
    ("  bits: 1\n", ["recipe.yaml:11", "quant.bits", "greater than or equal to 2"]),
    (
        "  granularity: per-group\n  group_size: 5\n",
        ["recipe.yaml:13", "quant.group_size", "does not divide", "16"],
    ),
    ("  granularity: per-group\n", ["quant.group_size", "required"]),
    ("  group_size: 4\n", ["quant.group_size", "only used with granularity per-group"]),
    ("  include: ['enc.*.ffn*']\n", ["recipe.yaml:12", "quant.include", "'enc.*.ffn*' matches no parameter"]),
    ("  exclude: ['*nrom*']\n", ["quant.exclude", "matches no parameter"]),
    (
        "  scale: topk-lp\n  k: 4\n",
        ["recipe.yaml:13", "quant.k", "k=4 is larger than the 3 weights", "k <= 3"],
    ),
    ("  scale: clip\n  scale_grad: true\n", ["quant.scale_grad", "no gradient"]),
    ("  scale: lsqq\n", ["quant.scale", "did you mean 'lsq'"]),
]


@pytest.mark.parametrize("extra,fragments", BAD, ids=[b[0].strip().split("\n")[-1][:24] for b in BAD])
def test_bad_quant_settings_are_recipe_errors_naming_the_key(tmp_path, extra, fragments):
    path = write(tmp_path, extra)
    if extra.startswith("  bits: 1"):
        path.write_text(RECIPE.replace("  bits: 4\n", extra))
    with pytest.raises(RecipeError) as e:
        load_suite(path)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_cli_run_with_bad_group_size_exits_2_and_writes_nothing(tmp_path):
    path = write(tmp_path, "  granularity: per-group\n  group_size: 5\n")
    results = tmp_path / "results"
    out = CliRunner().invoke(app, ["run", str(path), "--results", str(results)])
    assert out.exit_code == 2, out.output
    assert "quant.group_size" in out.output
    assert not results.exists()


def test_quant_inspect_lists_parameters_and_float_kept(tmp_path):
    path = write(
        tmp_path, "  granularity: per-group\n  group_size: 8\n  exclude: ['*norm*', '*bias*', '*conv*']\n"
    )
    out = CliRunner().invoke(app, ["quant", "inspect", str(path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    text = out.output
    assert "encoder.conformer_layers.0.ffn1.sequential.1.weight" in text
    assert "group-8" in text and "ste" in text and "absmax + round-ste" in text
    assert "kept float" in text and "encoder.conformer_layers.0.conv_module.sequential.2.weight" in text
    assert "head.bias" in text
    row = next(line for line in text.splitlines() if "ffn1.sequential.1.weight" in line)
    assert "│ 4 " in row and "f/4" in row  # trained at 4 bits; evaluated float and 4
    bad = CliRunner().invoke(app, ["quant", "inspect", str(write(tmp_path, "  include: ['nothing*']\n"))])
    assert bad.exit_code == 2 and "quant.include" in bad.output


# --------------------------------------------------------------------------- the parts' options


def test_part_options_are_declared_once_and_reach_spec_recipe_and_run_ids():
    """Each scale function's and estimator's options (qbench.quant.techniques.OPTIONS) are the
    fields of QuantSpec and of a recipe's quant section, with their defaults and their checks;
    those not hashed at their default enter run ids only when set."""
    from dataclasses import fields

    from qbench.config import QuantConfig
    from qbench.config.run_ids import HASHED_WHEN_SET
    from qbench.quant.techniques import ESTIMATORS, OPTIONS, SCALES

    declared = [o.name for part in (*SCALES.values(), *ESTIMATORS.values()) for o in part.options]
    assert sorted(declared) == sorted(o.name for o in OPTIONS)  # each once
    assert {"k", "p", "c", "clip_every", "noise"} <= set(declared)
    spec_fields = {f.name: f.default for f in fields(QuantSpec)}
    for o in OPTIONS:
        assert spec_fields[o.name] == o.default == QuantConfig.model_fields[o.name].default
        assert (("quant", o.name) in HASHED_WHEN_SET) == (not o.hashed_at_default)
    with pytest.raises(ValueError, match="k must be a positive int"):
        QuantSpec("rand", k=0)
    with pytest.raises(ValueError, match="clip_every must be a positive int"):
        QuantSpec("clip", clip_every=0)
    with pytest.raises(ValueError, match="unknown noise 'gauss'"):
        QuantSpec("pqn", noise="gauss")
    with pytest.raises(ValueError, match="p must be > 0"):
        QuantSpec("rand", p=0.0)


def test_quantizers_differing_in_a_part_option_do_not_share_a_pass():
    from qbench.quant import batched_quantization

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    quantize_(model, QuantSpec("rand", 4, include=("0.weight",)))
    quantize_(model, QuantSpec("rand", 4, k=3, include=("1.weight",)))
    q0, q1 = model[0].parametrizations.weight[0], model[1].parametrizations.weight[0]
    assert (q0.scale_fn.k, q1.scale_fn.k) == (2, 3) and q0.batch_key() != q1.batch_key()
    x = torch.randn(3, 8)
    with torch.no_grad(), batched_quantization(model.eval()):
        batched = model(x)
    torch.testing.assert_close(batched, model(x))
