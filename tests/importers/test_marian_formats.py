"""The other layouts of a Marian checkpoint: TensorFlow's `tf_model.h5` and Marian's own `.npz`.

One random PyTorch `MarianMTModel` (`test_marian`'s) is written three ways: by
`save_pretrained` (safetensors), as the Keras weights file `TFMarianMTModel.save_pretrained`
writes (TensorFlow names, as transformers' `modeling_tf_pytorch_utils` names them), and as an
OPUS-MT release (Marian's names: the inverse of transformers' `convert_marian_to_pytorch`).
Each is imported through `keras-s2s import`; the three runs must give the same logits.
"""

import json
import re
import shutil

import numpy as np
import pytest

from tests.importers.test_marian import _checkpoint

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")
yaml = pytest.importorskip("yaml")

from keras_s2s.cli import main  # noqa: E402
from keras_s2s.inference.translator import Translator  # noqa: E402

MAX_LENGTH = 12
#: transformers' `convert_marian_to_pytorch.BART_CONVERTER`: Marian's name of each layer weight
#: (after `encoder_l1_` / `decoder_l1_`) → PyTorch's.
BART_CONVERTER = {
    "self_Wq": "self_attn.q_proj.weight", "self_Wk": "self_attn.k_proj.weight",
    "self_Wv": "self_attn.v_proj.weight", "self_Wo": "self_attn.out_proj.weight",
    "self_bq": "self_attn.q_proj.bias", "self_bk": "self_attn.k_proj.bias",
    "self_bv": "self_attn.v_proj.bias", "self_bo": "self_attn.out_proj.bias",
    "self_Wo_ln_scale": "self_attn_layer_norm.weight",
    "self_Wo_ln_bias": "self_attn_layer_norm.bias",
    "ffn_W1": "fc1.weight", "ffn_b1": "fc1.bias", "ffn_W2": "fc2.weight", "ffn_b2": "fc2.bias",
    "ffn_ffn_ln_scale": "final_layer_norm.weight", "ffn_ffn_ln_bias": "final_layer_norm.bias",
    "context_Wk": "encoder_attn.k_proj.weight", "context_Wo": "encoder_attn.out_proj.weight",
    "context_Wq": "encoder_attn.q_proj.weight", "context_Wv": "encoder_attn.v_proj.weight",
    "context_bk": "encoder_attn.k_proj.bias", "context_bo": "encoder_attn.out_proj.bias",
    "context_bq": "encoder_attn.q_proj.bias", "context_bv": "encoder_attn.v_proj.bias",
    "context_Wo_ln_scale": "encoder_attn_layer_norm.weight",
    "context_Wo_ln_bias": "encoder_attn_layer_norm.bias",
}


def _tf_name(name):
    """`TFMarianMTModel`'s weight name (and whether its value is transposed) of the PyTorch
    weight `name`: scopes for modules, `kernel` for a Dense matrix, `gamma`/`beta` for a layer
    norm, the shared embedding under `model.shared/model.shared/embeddings`."""
    if name == "model.shared.weight":
        return "model.shared/model.shared/embeddings:0", False
    *scopes, last = re.sub(r"layers\.(\d+)", r"layers#\1", name).split(".")
    scopes = [scope.replace("#", ".") for scope in scopes]
    if "layer_norm" in scopes[-1]:
        last = {"weight": "gamma", "bias": "beta"}[last]
    elif last == "weight" and "embed_positions" in scopes[-1]:
        last = "embeddings"
    elif last == "weight":
        last = "kernel"
    return "/".join(["tf_marian_mt_model", *scopes, last]) + ":0", last == "kernel"


def _write_tf_h5(state, path):
    """The Keras weights file of a `TFMarianMTModel` holding `state` (PyTorch names): one
    group a top-level layer (`model`, `final_logits_bias`), each listing its weights' names."""
    layers = {"model": {}, "final_logits_bias": {"final_logits_bias:0": state[
        "final_logits_bias"]}}
    for name, value in state.items():
        if name.startswith("model.") and "embed_tokens" not in name:  # tied to model.shared
            tf_name, transposed = _tf_name(name)
            layers["model"][tf_name] = value.T if transposed else value
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = np.asarray([name.encode() for name in layers])
        for layer, weights in layers.items():
            group = file.create_group(layer)
            group.attrs["weight_names"] = np.asarray([name.encode() for name in weights])
            for name, value in weights.items():
                group.create_dataset(name, data=value)


def _write_marian_release(state, config, vocabularies, directory):
    """An OPUS-MT release of `state`: the `.npz` under Marian's names (without `<pad>`, the
    last token), its `special:model.yml`, `decoder.yml` and the vocabulary `.yml`s
    (`vocabularies`: the source's and the target's `{token: id}`). One shared embedding is
    `Wemb`, separate ones `encoder_Wemb` and `decoder_Wemb`; an output projection not tied to
    the target embedding is `decoder_ff_logit_out_W`, `(d_model, vocabulary)`."""
    pad = config["pad_token_id"]
    shared, tied = config["share_encoder_decoder_embeddings"], config["tie_word_embeddings"]
    arrays = {"decoder_ff_logit_out_b": state["final_logits_bias"][:, :pad]}
    if shared:
        arrays["Wemb"] = state["model.shared.weight"][:pad]
    else:
        for stack in ("encoder", "decoder"):
            arrays[f"{stack}_Wemb"] = state[f"model.{stack}.embed_tokens.weight"][:pad]
    if not tied:
        arrays["decoder_ff_logit_out_W"] = state["lm_head.weight"][:pad].T
    for stack in ("encoder", "decoder"):
        for index in range(config[f"{stack}_layers"]):
            for marian, torch_name in BART_CONVERTER.items():
                key = f"model.{stack}.layers.{index}.{torch_name}"
                if key in state:
                    value = state[key]
                    arrays[f"{stack}_l{index + 1}_{marian}"] = (
                        value.T if value.ndim == 2 else value[None, :])
    options = {"type": "transformer", "dim-emb": config["d_model"],
               "enc-depth": config["encoder_layers"], "dec-depth": config["decoder_layers"],
               "transformer-heads": config["encoder_attention_heads"],
               "transformer-dim-ffn": config["encoder_ffn_dim"],
               "transformer-ffn-activation": config["activation_function"],
               "transformer-preprocess": "", "transformer-postprocess": "dan",
               "transformer-postprocess-emb": "d", "tied-embeddings-all": shared and tied,
               "tied-embeddings-src": shared, "tied-embeddings": tied,
               "transformer-train-position-embeddings": False, "dim-vocabs": [pad, pad]}
    text = yaml.safe_dump(options) + "\0"
    arrays["special:model.yml"] = np.frombuffer(text.encode(), "uint8")
    np.savez(directory / "opus.spm-spm.transformer-align.npz", **arrays)
    names = (["opus.spm-spm.vocab.yml"] * 2 if shared
             else ["opus.src.vocab.yml", "opus.trg.vocab.yml"])
    for name, vocabulary in zip(names, vocabularies):
        tokens = {token: index for token, index in vocabulary.items() if index < pad}
        (directory / name).write_text(yaml.safe_dump(tokens, allow_unicode=True),
                                      encoding="utf-8")
    (directory / "decoder.yml").write_text(yaml.safe_dump({
        "models": ["opus.spm-spm.transformer-align.npz"], "vocabs": names, "beam-size": 4,
        "relative-paths": True}))


def _write_native(checkpoint, model, directory):
    """The OPUS-MT release of the Hugging Face `checkpoint` directory holding `model`."""
    directory.mkdir()
    for name in ("source.spm", "target.spm"):
        shutil.copy(checkpoint / name, directory)
    vocabularies = [json.loads((checkpoint / name).read_text(encoding="utf-8")) for name in (
        "vocab.json", "vocab.json" if model.config.share_encoder_decoder_embeddings
        else "target_vocab.json")]
    state = {name: value.numpy() for name, value in model.state_dict().items()}
    _write_marian_release(state, model.config.to_dict(), vocabularies, directory)
    return state


def _import(layout, run):
    assert main(["import", str(layout), "--out", str(run), "--max-length", str(MAX_LENGTH)]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`{layout: imported run directory}` of one checkpoint written three ways."""
    root = tmp_path_factory.mktemp("formats")
    checkpoint = root / "safetensors"
    checkpoint.mkdir()
    model, _ = _checkpoint(checkpoint, "swish", True, True, seed=0)
    state = _write_native(checkpoint, model, root / "native")
    h5 = root / "h5"
    shutil.copytree(checkpoint, h5, ignore=shutil.ignore_patterns("*.safetensors"))
    _write_tf_h5(state, h5 / "tf_model.h5")
    return {layout.name: _import(layout, root / f"run-{layout.name}")
            for layout in (checkpoint, h5, root / "native")}


def _logits(run, source, target):
    return np.asarray(Translator.load(str(run)).model((source, target)))


def test_h5_and_marian_npz_give_the_safetensors_logits(runs):
    model = Translator.load(str(runs["safetensors"])).model
    pad = model.pad_id
    rng = np.random.default_rng(0)
    source = rng.integers(0, pad, (6, 9)).astype("int32")
    target = np.concatenate([np.full((6, 1), pad), rng.integers(0, pad, (6, 5))],
                            axis=1).astype("int32")
    expected = np.asarray(model((source, target)))
    np.testing.assert_allclose(_logits(runs["h5"], source, target), expected, atol=1e-5)
    # Marian has no `<pad>` token: its logit gets the bias 0 there, every other one the same.
    native = _logits(runs["native"], source, target)
    np.testing.assert_allclose(np.delete(native, pad, axis=-1),
                               np.delete(expected, pad, axis=-1), atol=1e-5)


@pytest.fixture(scope="module")
def separate_untied(tmp_path_factory):
    """`(PyTorch model, {layout: imported run})` of a checkpoint laid out as OPUS-MT's tc-big
    ones: separate source and target vocabularies and embeddings, and an output projection of
    its own, written by `save_pretrained` and as an OPUS-MT release."""
    root = tmp_path_factory.mktemp("separate-untied")
    checkpoint = root / "safetensors"
    checkpoint.mkdir()
    model, _ = _checkpoint(checkpoint, "swish", True, False, seed=1, tied=False)
    _write_native(checkpoint, model, root / "native")
    return model, {layout.name: _import(layout, root / f"run-{layout.name}")
                   for layout in (checkpoint, root / "native")}


def test_separate_vocabularies_and_untied_output_give_pytorch_logits(separate_untied):
    model, runs = separate_untied
    pad = model.config.pad_token_id
    rng = np.random.default_rng(1)
    source = rng.integers(0, pad, (6, 9)).astype("int32")
    target = np.concatenate([np.full((6, 1), pad), rng.integers(0, pad, (6, 5))],
                            axis=1).astype("int32")
    with torch.no_grad():
        expected = model(input_ids=torch.tensor(source),
                         decoder_input_ids=torch.tensor(target)).logits.numpy()
    logits = {}
    for layout, run in runs.items():
        translator = Translator.load(str(run))
        assert (translator.source_tokenizer.vocabulary
                != translator.target_tokenizer.vocabulary)
        logits[layout] = np.asarray(translator.model((source, target)))
    ours = logits["safetensors"]
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    # Marian has no `<pad>` token: its logit gets the weights and bias 0 there.
    native = np.delete(logits["native"], pad, axis=-1)
    np.testing.assert_allclose(native, np.delete(expected, pad, axis=-1), atol=1e-4)
    np.testing.assert_allclose(native, np.delete(ours, pad, axis=-1), atol=1e-5)


@pytest.mark.parametrize("option", ["share_encoder_decoder_embeddings", "tie_word_embeddings"])
def test_h5_with_separate_or_untied_embeddings_is_refused_in_one_line(runs, tmp_path, capsys,
                                                                     option):
    """`TFMarianMTModel` holds one embedding for both vocabularies and the output layer: its
    `tf_model.h5` cannot hold a checkpoint whose `config.json` says otherwise."""
    h5 = tmp_path / "h5"
    shutil.copytree(runs["h5"].parent / "h5", h5)
    config = json.loads((h5 / "config.json").read_text())
    (h5 / "config.json").write_text(json.dumps({**config, option: False}))
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["import", str(h5), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    assert f"{option}=false" in error and "model.safetensors" in error, error
    assert not out.exists()


def test_marian_vocabularies_of_different_sizes_are_refused_in_one_line(separate_untied,
                                                                        tmp_path, capsys):
    """One `<pad>` id (after the last token) pads and starts both sides, as in transformers'
    converter, which also refuses them."""
    native = tmp_path / "native"
    shutil.copytree(separate_untied[1]["native"].parent / "native", native)
    vocabulary = native / "opus.trg.vocab.yml"
    tokens = yaml.safe_load(vocabulary.read_text(encoding="utf-8"))
    tokens.pop(max(tokens, key=tokens.get))
    vocabulary.write_text(yaml.safe_dump(tokens, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["import", str(native), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    assert f"have {len(tokens) + 1} and {len(tokens)} tokens" in error, error
    assert not out.exists()


def test_a_directory_without_a_checkpoint_lists_what_was_looked_for(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["import", str(tmp_path), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    for name in ("config.json", "model.safetensors", "tf_model.h5", "decoder.yml", ".npz"):
        assert name in error
    assert not out.exists()
