"""Marian's own checkpoint layout (an OPUS-MT release), read as a Hugging Face checkpoint.

An OPUS-MT release holds `decoder.yml` (naming the model `.npz` and the two vocabularies), the
model `.npz` (its configuration as YAML text under `special:model.yml`, and the weights under
Marian's names), the vocabularies (`.yml`, token → id) and `source.spm`/`target.spm`. `read`
gives what `keras_s2s.importers.marian` reads from Hugging Face's layout: the configuration,
the weights under Hugging Face's names, and the vocabularies, mapped as transformers'
`convert_marian_to_pytorch` maps them: Marian's `(in, out)` matrices transposed, `<pad>` added
after the last token (a zero embedding and a zero output bias), √d_model embedding scaling,
the decoder started from `<pad>`.
"""

import os
import re

import numpy as np

from keras_s2s.importers.marian import Weights

#: The YAML text of the model's configuration in the `.npz`.
CONFIG_KEY = "special:model.yml"
_PROJECTIONS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}
#: Marian's names of a layer's weights (after `encoder_l1_` / `decoder_l1_`) → Hugging Face's.
LAYER_NAMES = {
    **{f"{marian}_{kind}{short}": f"{attention}.{projection}.{name}"
       for marian, attention in (("self", "self_attn"), ("context", "encoder_attn"))
       for kind, name in (("W", "weight"), ("b", "bias"))
       for short, projection in _PROJECTIONS.items()},
    "self_Wo_ln_scale": "self_attn_layer_norm.weight",
    "self_Wo_ln_bias": "self_attn_layer_norm.bias",
    "context_Wo_ln_scale": "encoder_attn_layer_norm.weight",
    "context_Wo_ln_bias": "encoder_attn_layer_norm.bias",
    "ffn_W1": "fc1.weight", "ffn_b1": "fc1.bias", "ffn_W2": "fc2.weight", "ffn_b2": "fc2.bias",
    "ffn_ffn_ln_scale": "final_layer_norm.weight", "ffn_ffn_ln_bias": "final_layer_norm.bias",
}
#: The settings of the Marian models our Transformer holds (transformers' converter assumes
#: the same), with the only value supported; a setting left out has Marian's default, this one.
SUPPORTED = {"type": "transformer", "transformer-preprocess": "",
             "transformer-postprocess": "dan", "transformer-postprocess-emb": "d",
             "transformer-train-position-embeddings": False, "transformer-ffn-depth": 2,
             "right-left": False}
#: The output layer's bias and (without tied embeddings) matrix.
OUTPUT_BIAS, OUTPUT_MATRIX = "decoder_ff_logit_out_b", "decoder_ff_logit_out_W"
_LAYER = re.compile(r"(encoder|decoder)_l(\d+)_(.+)")


def read(directory):
    """`(config, weights, vocabularies)` of the Marian checkpoint in `directory`: Hugging
    Face's `config.json` keys, `Weights` under its names, `[(file name, {token: id})]`."""
    settings = _yaml(os.path.join(directory, "decoder.yml"), "the decoder settings")
    models, vocabs = (settings.get(key) if isinstance(settings, dict) else None
                      for key in ("models", "vocabs"))
    if not models or not isinstance(vocabs, list) or len(vocabs) != 2:
        raise ValueError(f"{os.path.join(directory, 'decoder.yml')} must name the model "
                         f"(models:) and the source and target vocabularies (vocabs:)")
    path = os.path.join(directory, models[0])
    arrays = _npz(path)
    options = _model_options(arrays, path)
    vocabularies = [(name, _vocabulary(os.path.join(directory, name))) for name in vocabs]
    shared = bool(options.get("tied-embeddings-all") or options.get("tied-embeddings-src"))
    tied = bool(options.get("tied-embeddings-all") or options.get("tied-embeddings"))
    sizes = [len(ids) for _, ids in vocabularies]
    if sizes[0] != sizes[1]:
        raise ValueError(f"{os.path.join(directory, 'decoder.yml')}: its vocabularies "
                         f"{vocabs[0]} and {vocabs[1]} have {sizes[0] - 1} and {sizes[1] - 1} "
                         f"tokens; only equal sizes are supported (one <pad> id, after the "
                         f"last token, pads and starts both sides)")
    config = {
        "model_type": "marian", "vocab_size": sizes[0], "decoder_vocab_size": sizes[1],
        "d_model": options["dim-emb"], "encoder_layers": options["enc-depth"],
        "decoder_layers": options["dec-depth"],
        "encoder_attention_heads": options["transformer-heads"],
        "decoder_attention_heads": options["transformer-heads"],
        "encoder_ffn_dim": options["transformer-dim-ffn"],
        "decoder_ffn_dim": options["transformer-dim-ffn"],
        "activation_function": options.get("transformer-ffn-activation", "swish"),
        "share_encoder_decoder_embeddings": shared, "tie_word_embeddings": tied,
        "scale_embedding": True, "pad_token_id": sizes[0] - 1,
        "decoder_start_token_id": sizes[0] - 1,
        "eos_token_id": vocabularies[0][1].get("</s>", 0),
        "max_position_embeddings": options["dim-emb"],  # as transformers' converter sets it
    }
    return config, Weights(path, _weights(arrays, path, shared, tied).items()), vocabularies


def _yaml(path, what, loader=None):
    """The YAML file at `path` (`loader`: yaml's, default `SafeLoader`)."""
    try:
        import yaml
    except ImportError:
        raise ValueError(f"reading {path} needs PyYAML (pip install pyyaml)") from None
    if not os.path.exists(path):
        raise ValueError(f"{path} is missing ({what})")
    try:
        with open(path, encoding="utf-8") as file:
            return yaml.load(file, Loader=loader or yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None


def _npz(path):
    """The arrays of the model `.npz` at `path`."""
    if not os.path.exists(path):
        raise ValueError(f"{path} is missing (the model named by decoder.yml)")
    try:
        with np.load(path) as file:
            return {name: file[name] for name in file.files}
    except (OSError, ValueError, EOFError) as error:  # not a zip, truncated, ...
        raise ValueError(f"{path} is not a complete .npz file: {error}") from None


def _model_options(arrays, path):
    """The model's settings (`special:model.yml`), checked against `SUPPORTED`."""
    import yaml

    if CONFIG_KEY not in arrays:
        raise ValueError(f"{path} holds no {CONFIG_KEY} (the model's settings)")
    text = bytes(np.asarray(arrays[CONFIG_KEY], "uint8")).rstrip(b"\0").decode("utf-8")
    options = yaml.safe_load(text)
    for name in ("dim-emb", "enc-depth", "dec-depth", "transformer-heads",
                 "transformer-dim-ffn"):
        if not isinstance(options.get(name), int):
            raise ValueError(f"{path}: {CONFIG_KEY} has no int {name}")
    if options["enc-depth"] != options["dec-depth"]:
        raise ValueError(f"{path}: enc-depth {options['enc-depth']} and dec-depth "
                         f"{options['dec-depth']} differ (one layer count for both stacks)")
    for name, supported in SUPPORTED.items():
        if options.get(name, supported) != supported:
            raise ValueError(f"{path}: {name}={options[name]!r} is not supported (only "
                             f"{supported!r})")
    return options


def _vocabulary(path):
    """`{token: id}` of a Marian vocabulary, with `<pad>` added after the last id (as
    transformers' converter adds it). Read as plain strings: a token such as `true` or `1`
    stays a string."""
    import yaml

    ids = _yaml(path, "a vocabulary", loader=yaml.BaseLoader)
    if not isinstance(ids, dict):
        raise ValueError(f"{path} must map tokens to ids")
    try:
        ids = {token: int(index) for token, index in ids.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{path} must map tokens to int ids") from None
    ids.setdefault("<pad>", max(ids.values(), default=-1) + 1)
    return ids


def _weights(arrays, path, shared, tied):
    """`{Hugging Face name: array}` of Marian's `arrays`; a weight not understood is a
    one-line ValueError naming it."""
    weights, unknown = {}, []
    embeddings = {"Wemb": "shared.weight"} if shared else {
        "encoder_Wemb": "encoder.embed_tokens.weight",
        "decoder_Wemb": "decoder.embed_tokens.weight"}
    for name, value in arrays.items():
        layer = _LAYER.fullmatch(name)
        if layer and layer.group(3) in LAYER_NAMES:
            stack, number, suffix = layer.groups()
            weights[f"{stack}.layers.{int(number) - 1}.{LAYER_NAMES[suffix]}"] = np.squeeze(
                value.T)
        elif name in embeddings:
            weights[embeddings[name]] = _with_pad_row(value)
        elif name == OUTPUT_BIAS:
            weights["final_logits_bias"] = _with_pad_row(value.T).T
        elif name == OUTPUT_MATRIX and not tied:
            weights["lm_head.weight"] = _with_pad_row(value.T)
        elif name != CONFIG_KEY:
            unknown.append(name)
    if unknown:
        raise ValueError(f"{path}: weights not understood (learned positions, embedding "
                         f"normalisation or another architecture): {', '.join(unknown[:5])}")
    return weights


def _with_pad_row(rows):
    """`rows` (one a token) with a zero row for `<pad>` after the last."""
    return np.concatenate([rows, np.zeros((1, rows.shape[1]), rows.dtype)])
