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


def _write_marian_release(state, config, vocabulary, directory):
    """An OPUS-MT release of `state`: the `.npz` under Marian's names (without `<pad>`, the
    last token), its `special:model.yml`, `decoder.yml` and the vocabulary `.yml`."""
    pad = config["pad_token_id"]
    arrays = {"Wemb": state["model.shared.weight"][:pad],
              "decoder_ff_logit_out_b": state["final_logits_bias"][:, :pad]}
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
               "transformer-postprocess-emb": "d", "tied-embeddings-all": True,
               "transformer-train-position-embeddings": False, "dim-vocabs": [pad, pad]}
    text = yaml.safe_dump(options) + "\0"
    arrays["special:model.yml"] = np.frombuffer(text.encode(), "uint8")
    np.savez(directory / "opus.spm-spm.transformer-align.npz", **arrays)
    tokens = {token: index for token, index in vocabulary.items() if index < pad}
    (directory / "opus.spm-spm.vocab.yml").write_text(
        yaml.safe_dump(tokens, allow_unicode=True), encoding="utf-8")
    (directory / "decoder.yml").write_text(yaml.safe_dump({
        "models": ["opus.spm-spm.transformer-align.npz"],
        "vocabs": ["opus.spm-spm.vocab.yml", "opus.spm-spm.vocab.yml"],
        "beam-size": 4, "relative-paths": True}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`{layout: imported run directory}` of one checkpoint written three ways."""
    root = tmp_path_factory.mktemp("formats")
    checkpoint = root / "safetensors"
    checkpoint.mkdir()
    model, _ = _checkpoint(checkpoint, "swish", True, True, seed=0)
    state = {name: value.numpy() for name, value in model.state_dict().items()}
    spm = [checkpoint / name for name in ("source.spm", "target.spm")]
    h5 = root / "h5"
    shutil.copytree(checkpoint, h5, ignore=shutil.ignore_patterns("*.safetensors"))
    _write_tf_h5(state, h5 / "tf_model.h5")
    native = root / "native"
    native.mkdir()
    for path in spm:
        shutil.copy(path, native)
    _write_marian_release(state, model.config.to_dict(),
                          json.loads((checkpoint / "vocab.json").read_text()), native)
    runs = {}
    for layout in (checkpoint, h5, native):
        runs[layout.name] = root / f"run-{layout.name}"
        assert main(["import", str(layout), "--out", str(runs[layout.name]), "--max-length",
                     str(MAX_LENGTH)]) == 0
    return runs


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


def test_a_directory_without_a_checkpoint_lists_what_was_looked_for(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["import", str(tmp_path), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    for name in ("config.json", "model.safetensors", "tf_model.h5", "decoder.yml", ".npz"):
        assert name in error
    assert not out.exists()
