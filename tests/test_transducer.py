"""The transducer (RNN-T) head: loss, batched greedy decoding, quantization, recipe checks."""

from __future__ import annotations

import pytest
import torch

from qbench.config import Recipe, RecipeError, load_suite
from qbench.quant import find_quantizers, quantize_
from qbench.tasks.models import skeleton_model
from qbench.tasks.tokenizers import CharTokenizer
from qbench.tasks.transducer import ConformerTransducer, pad_targets, transducer_loss

TEXTS = ["a cab", "bad"]


def _tiny(seed: int = 0) -> ConformerTransducer:
    torch.manual_seed(seed)
    tok = CharTokenizer()
    return ConformerTransducer(
        8, tok.size, 32, 1, 2, 2, 3, 0.0, subsampling=4, utterance_cmn=False, pred_dim=32, joiner_dim=32
    )


def _batch():
    tok = CharTokenizer()
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 48, 8, generator=gen)
    lengths = torch.tensor([48, 40])
    ids = [torch.tensor(tok.encode(t)) for t in TEXTS]
    target_lengths = torch.tensor([len(i) for i in ids])
    return feats, lengths, torch.cat(ids), target_lengths


@pytest.fixture(scope="module")
def overfit():
    """A tiny transducer trained on two utterances until it knows them; with its losses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # set up before conftest's per-test one_thread fixture
    model = _tiny()
    feats, lengths, targets, target_lengths = _batch()
    padded = pad_targets(targets, target_lengths)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(250):
        logits, enc_lengths = model(feats, lengths, padded)
        loss = transducer_loss(logits, enc_lengths, padded, target_lengths).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    torch.set_num_threads(threads)
    return model, losses


def test_pad_targets():
    padded = pad_targets(torch.tensor([3, 4, 5]), torch.tensor([1, 2]))
    assert padded.tolist() == [[3, 0], [4, 5]]


def test_loss_decreases_on_tiny_batch(overfit):
    _, losses = overfit
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.1 * losses[0]


def test_greedy_decoding_recovers_overfit_transcripts(overfit):
    model, _ = overfit
    feats, lengths, _, _ = _batch()
    tok = CharTokenizer()
    assert [tok.decode(h) for h in model.greedy_decode(feats, lengths)] == TEXTS


@pytest.mark.parametrize("trained", [True, False])
def test_batched_greedy_equals_one_at_a_time(overfit, trained):
    """Decoding the encoder states of a batch gives each utterance what it gets alone (the
    encoder itself sees padding in a batch, so the comparison starts from its states)."""
    model = overfit[0] if trained else _tiny(seed=3).eval()
    gen = torch.Generator().manual_seed(5)
    enc = model.enc_proj(torch.randn(4, 12, 32, generator=gen))
    if trained:  # the overfit utterances' own states, plus random ones
        e, n = model.encode_joint(*_batch()[:2])
        enc[:2, : e.shape[1]] = e
    enc_lengths = torch.tensor([12, 10, 7, 3])
    with torch.no_grad():
        batched = model.greedy_search(enc, enc_lengths)
        alone = [
            model.greedy_search(enc[i : i + 1, :n], enc_lengths[i : i + 1])[0]
            for i, n in enumerate([12, 10, 7, 3])
        ]
    assert batched == alone
    assert any(batched)


def test_max_symbols_caps_emissions_per_frame():
    model = _tiny().eval()
    with torch.no_grad():
        model.joiner.bias.fill_(0).data[5] = 100.0  # never blank: every frame emits the cap
        model.max_symbols = 3
        hyps = model.greedy_search(torch.zeros(2, 4, 32), torch.tensor([4, 2]))
    assert [len(h) for h in hyps] == [12, 6]


def _recipe(**kw) -> Recipe:
    base = {
        "name": "t",
        "model": {"arch": "conformer-transducer", "d_model": 32, "layers": 1, "heads": 2, "pred_dim": 32},
        "quant": {"technique": "rand"},
    }
    for section, values in kw.items():
        base[section] = {**base.get(section, {}), **values}
    return Recipe.model_validate(base)


def test_quantize_attaches_to_predictor_and_joiner():
    recipe = _recipe()
    model = skeleton_model(recipe)
    names = quantize_(model, recipe.quant.spec())
    for name in (
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "embed.weight",
        "pred_proj.weight",
        "enc_proj.weight",
        "joiner.weight",
        "encoder.conformer_layers.0.self_attn.in_proj_weight",
    ):
        assert name in names
    assert set(find_quantizers(model)) == set(names)
    # training forward through the quantized LSTM reaches the original weights
    feats, lengths, targets, target_lengths = _batch()
    padded = pad_targets(targets, target_lengths)
    model.feat_std.fill_(1.0)
    logits, enc_lengths = model(feats[:, :, :8].repeat(1, 1, 10), lengths, padded)
    transducer_loss(logits, enc_lengths, padded, target_lengths).mean().backward()
    assert model.lstm.parametrizations.weight_hh_l0.original.grad is not None


def test_transducer_include_default_and_own():
    assert "*.weight_ih_l0" in _recipe().quant.include
    assert (
        "*.weight_ih_l0"
        not in Recipe.model_validate({"name": "t", "quant": {"technique": "rand"}}).quant.include
    )
    own = _recipe(quant={"include": ["*.weight"]})
    assert own.quant.include == ("*.weight",)


def _write(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_lexicon_decoding_with_transducer_is_rejected(tmp_path):
    path = _write(
        tmp_path,
        "name: t\ntask: asr\nmodel:\n  arch: conformer-transducer\neval:\n  decoder: lexicon\n",
    )
    with pytest.raises(RecipeError, match=r"r.yaml:6: eval.decoder: lexicon decoding is a CTC beam search"):
        load_suite(path)


def test_wrong_arch_names_both_asr_archs(tmp_path):
    path = _write(tmp_path, "name: t\ntask: asr\nmodel:\n  arch: transformer\n")
    with pytest.raises(RecipeError, match="'conformer-ctc' or 'conformer-transducer'"):
        load_suite(path)


def test_unknown_transducer_key_points_at_its_line(tmp_path):
    path = _write(tmp_path, "name: t\nmodel:\n  arch: conformer-transducer\n  pred_dm: 64\n")
    with pytest.raises(
        RecipeError, match=r"r.yaml:4: model.pred_dm: unknown key \(did you mean 'pred_dim'\?\)"
    ):
        load_suite(path)


def test_grid_over_arch():
    suite = load_suite("recipes/asr-transducer.yaml")
    archs = {(r.model.arch, r.quant.technique) for r in suite.runs}
    assert archs == {(a, t) for a in ("conformer-ctc", "conformer-transducer") for t in ("float", "rand")}


def test_run_and_export_end_to_end(tmp_path, results):
    """A tiny transducer through the engine (shared warm-up, QAT, three precisions) and export:
    the packed model, LSTM weights included, decodes the test set as the run did."""
    from typer.testing import CliRunner

    from qbench.cli.main import app
    from qbench.run.engine import run_recipe
    from tests.conftest import tiny_recipe

    path = tiny_recipe(tmp_path / "r.yaml", technique="ste", steps=8, warmup=4)
    text = path.read_text().replace(
        "model: {", "model: {arch: conformer-transducer, pred_dim: 16, joiner_dim: 16, "
    )
    path.write_text(text)
    recipe = load_suite(path).runs[0]
    assert recipe.model.arch == "conformer-transducer"
    m = run_recipe(recipe, "tiny", results, torch.device("cpu"), progress=False)
    assert set(m["precisions"]) == {"float", "w8", "w4"}
    run = results / "runs" / "tiny" / recipe.run_id
    out = CliRunner().invoke(app, ["export", str(run), "--precision", "w4", "--results", str(results)])
    assert out.exit_code == 0, out.output
    assert "6/6 test hypotheses identical" in out.output
