"""Import an OPUS-MT / Marian checkpoint as a keras-s2s run directory.

`import_marian(source, out)` reads a local checkpoint directory (or downloads a hub name such as
`Helsinki-NLP/opus-mt-ko-en` with `huggingface_hub`, when installed) in one of three layouts:

- Hugging Face's: `config.json` (`model_type: marian`): post-norm encoder and decoder stacks
  with one layer count, head count and feed-forward width, the `swish` / `gelu` / `relu`
  activation, optional √d_model embedding scaling, sinusoids with every sine before every
  cosine, `final_logits_bias`; the weights, `model.safetensors` (read with `safetensors.numpy`,
  no PyTorch needed) or TensorFlow's `tf_model.h5` (`TFMarianMTModel.save_pretrained`'s Keras
  weights file, read with h5py, its names mapped as transformers' `modeling_tf_pytorch_utils`
  maps them); `source.spm`, `target.spm`, `vocab.json` (and `target_vocab.json` for separate
  vocabularies);
- Marian's own (an OPUS-MT release): a model `.npz` holding its configuration
  (`special:model.yml`) and weights under Marian's names (`Wemb`, `encoder_l1_self_Wq`, ...,
  mapped as transformers' `convert_marian_to_pytorch` maps them, `<pad>` added last),
  `decoder.yml` naming it and the vocabularies (`.yml`, token → id), `source.spm`,
  `target.spm`.

The SentencePiece models and vocabularies become two
`keras_s2s.data.tokenizers.MarianTokenizer`s. Every weight goes to the same place of our
`keras_s2s.models.Transformer`, built with the matching options and the checkpoint's own special
ids (`</s>` ends, `<pad>` pads and starts the decoder): nothing is permuted. The run is written
beside `out` under a hidden name and renamed into place, so a failure never leaves a
half-written run.
"""

import json
import logging
import os
import shutil
import tempfile

import numpy as np

logger = logging.getLogger(__name__)

#: Hugging Face's activation names → the `Transformer`'s.
ACTIVATIONS = {"swish": "silu", "silu": "silu", "gelu": "gelu", "relu": "relu"}

#: Options of older Marian/BART configurations that our Transformer does not have, with the
#: only value it supports.
UNSUPPORTED = {"normalize_before": False, "add_bias_logits": False, "normalize_embedding": False,
               "layernorm_embedding": False, "add_final_layer_norm": False,
               "static_position_embeddings": True}

#: A Hugging Face Marian checkpoint's tokenizer settings (`separate_vocabs`).
TOKENIZER_SETTINGS = "tokenizer_config.json"
#: The files read from a Hugging Face checkpoint (what a hub download fetches).
FILES = ("config.json", "model.safetensors", "source.spm", "target.spm", "vocab.json",
         "target_vocab.json", TOKENIZER_SETTINGS)

#: The default longest source and output of the run, in tokens (at most the checkpoint's
#: `max_position_embeddings`).
DEFAULT_MAX_LENGTH = 256


def import_marian(source, out, max_length=None):
    """Write the run directory `out` (which must not exist) from the checkpoint `source`.

    Args:
        source: a local Hugging Face Marian directory, or a hub name to download.
        out: the run directory to create.
        max_length: the run's `max_source_length` and `max_target_length` (tokens, the end
            token included); at most the checkpoint's `max_position_embeddings`. Default:
            `DEFAULT_MAX_LENGTH`, or `max_position_embeddings` when smaller.

    Returns:
        `out`.

    Raises:
        ValueError: one line naming the file or option that cannot be imported.
        FileExistsError: `out` exists.
    """
    if os.path.exists(out):
        raise FileExistsError(f"{out!r} already exists and is never overwritten; choose "
                              f"another --out")
    directory = _local_checkpoint(source)
    config, weights, vocabularies = _read_checkpoint(directory)
    if max_length is None:
        max_length = min(DEFAULT_MAX_LENGTH, config["max_position_embeddings"])
    if not isinstance(max_length, int) or not 2 <= max_length <= (
            config["max_position_embeddings"]):
        raise ValueError(f"max_length must be an int in [2, "
                         f"{config['max_position_embeddings']}] (the checkpoint's "
                         f"max_position_embeddings), got {max_length!r}")
    source_tokenizer, target_tokenizer = _tokenizers(directory, config, vocabularies)
    model = _model(config, weights)

    from keras_s2s import run as run_files
    from keras_s2s.training.config import TrainConfig

    run_config = TrainConfig(
        arch="transformer", data=str(source), out=str(out), tokenizer="unigram",
        shared_vocab=config["share_encoder_decoder_embeddings"], max_source_length=max_length,
        max_target_length=max_length, model=_model_options(config))
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.partial-",
                               dir=parent)
    try:
        run = os.path.join(staging, "run")
        run_files.save_run(run, run_config, model, source_tokenizer, target_tokenizer)
        os.rename(run, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("imported %s into %s", source, out)
    return out


def _local_checkpoint(source):
    """The local directory of `source`: itself, or a hub download of that name."""
    source = os.fspath(source)
    if os.path.isdir(source):
        return source
    if os.path.exists(source):
        raise ValueError(f"{source!r} is a file, not a Hugging Face Marian checkpoint directory")
    if source.count("/") != 1 or source.startswith((".", "/")):
        raise ValueError(f"{source!r} is neither a directory nor a Hugging Face Hub model name "
                         f"(owner/name)")
    try:
        import huggingface_hub
    except ImportError:
        raise ValueError(f"{source!r} is not a directory, and huggingface_hub is not installed "
                         f"to download it (pip install huggingface_hub)") from None
    try:
        return huggingface_hub.snapshot_download(source, allow_patterns=list(FILES))
    except Exception as error:  # no network, unknown name, ...: the hub's own reason
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"could not download {source!r} from the Hugging Face Hub: "
                         f"{type(error).__name__}: {reason}") from None


def _read_json(path, what):
    if not os.path.exists(path):
        raise ValueError(f"{path} is missing ({what})")
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def _read_checkpoint(directory):
    """`(config, weights, vocabularies)` of the checkpoint in `directory`, whichever its layout:
    Hugging Face's `config.json` and its names for the weights, and `[(file name, {token:
    id})]` of the source and target vocabularies."""
    if os.path.exists(os.path.join(directory, "config.json")):
        config = _read_config(directory)
        weights = _read_weights(directory)
        if weights.file == "tf_model.h5":
            _check_one_embedding(config, weights.path)
        return config, weights, _hugging_face_vocabularies(directory, config)
    if os.path.exists(os.path.join(directory, NATIVE_DECODER_CONFIG)):
        from keras_s2s.importers import marian_native

        config, weights, vocabularies = marian_native.read(directory)
        return _checked_config(config, weights.path), weights, vocabularies
    raise ValueError(f"{directory} holds no Marian checkpoint: looked for config.json with "
                     f"{' or '.join(WEIGHT_FILES)} (Hugging Face's layout), or "
                     f"{NATIVE_DECODER_CONFIG} with its model .npz (Marian's)")


def _check_one_embedding(config, path):
    """`TFMarianMTModel` (the writer of `tf_model.h5`) holds one embedding, shared by both
    vocabularies and the output layer: a `config` with separate ones cannot be in `path`."""
    for name in ("share_encoder_decoder_embeddings", "tie_word_embeddings"):
        if not config[name]:
            raise ValueError(f"{path}: config.json has {name}=false, but TFMarianMTModel's "
                             f"weights hold one embedding shared by both vocabularies and the "
                             f"output layer; import the checkpoint's model.safetensors instead")


def _read_config(directory):
    """`config.json`, checked to describe a model our Transformer holds exactly."""
    path = os.path.join(directory, "config.json")
    return _checked_config(_read_json(path, "the model configuration"), path)


def _checked_config(config, path):
    """The Hugging Face configuration `config` (read from `path`), with its defaults, checked
    to describe a model our Transformer holds exactly."""
    if not isinstance(config, dict) or config.get("model_type") != "marian":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise ValueError(f"{path}: model_type must be 'marian', got {kind!r}")
    defaults = {"share_encoder_decoder_embeddings": True, "tie_word_embeddings": True,
                "scale_embedding": False, "activation_function": "gelu", "dropout": 0.1,
                "eos_token_id": 0, "max_position_embeddings": 1024}
    config = {**defaults, **config}
    config.setdefault("decoder_vocab_size", config.get("vocab_size"))
    config.setdefault("decoder_start_token_id", config.get("pad_token_id"))
    for name, supported in UNSUPPORTED.items():
        if name in config and config[name] != supported:
            raise ValueError(f"{path}: {name}={json.dumps(config[name])} is not supported "
                             f"(only {json.dumps(supported)})")
    for ours, theirs in (("num_layers", ("encoder_layers", "decoder_layers")),
                         ("num_heads", ("encoder_attention_heads", "decoder_attention_heads")),
                         ("d_ff", ("encoder_ffn_dim", "decoder_ffn_dim"))):
        values = [config.get(name) for name in theirs]
        if None in values or values[0] != values[1]:
            raise ValueError(f"{path}: {theirs[0]} and {theirs[1]} must be equal ints (one "
                             f"{ours} for both stacks), got {values}")
    if config["activation_function"] not in ACTIVATIONS:
        raise ValueError(f"{path}: activation_function {config['activation_function']!r} is not "
                         f"supported; supported: {', '.join(ACTIVATIONS)}")
    for name in ("vocab_size", "d_model", "pad_token_id"):
        if not isinstance(config.get(name), int):
            raise ValueError(f"{path}: {name} must be an int, got {config.get(name)!r}")
    return config


def _vocabulary_sizes(config):
    """The source and target vocabulary sizes of a checked Marian `config`."""
    shared = config["share_encoder_decoder_embeddings"]
    return config["vocab_size"], config["vocab_size"] if shared else config["decoder_vocab_size"]


def _model_options(config):
    """The `Transformer` arguments of a checked Marian `config`, but the vocabulary sizes (the
    run's tokenizers give them, as in any run's `config.json`)."""
    shared = config["share_encoder_decoder_embeddings"]
    tied = config["tie_word_embeddings"]
    return {
        "num_layers": config["encoder_layers"], "d_model": config["d_model"],
        "num_heads": config["encoder_attention_heads"], "d_ff": config["encoder_ffn_dim"],
        "dropout": float(config["dropout"]), "max_length": config["max_position_embeddings"],
        "normalize_first": False, "tie_embeddings": tied, "share_embeddings": shared,
        "activation": ACTIVATIONS[config["activation_function"]],
        "scale_embeddings": bool(config["scale_embedding"]),
        "positional_layout": "concatenated", "tied_output_bias": tied,
        "pad_id": config["pad_token_id"], "start_id": config["decoder_start_token_id"],
        "end_id": config["eos_token_id"],
    }


class Weights(dict):
    """`{Hugging Face name (without `model.`): float32 array}`, and `path`, the file read
    (`file`: its name)."""

    def __init__(self, path, arrays):
        super().__init__((name.removeprefix("model."), np.asarray(value, "float32"))
                         for name, value in arrays)
        self.path, self.file = path, os.path.basename(path)


def _read_weights(directory):
    """The `Weights` of `model.safetensors`, or else of `tf_model.h5`."""
    for name in WEIGHT_FILES:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return WEIGHT_FILES[name](path)
    hint = (" (pytorch_model.bin is there: save the checkpoint with safetensors, e.g. "
            "save_pretrained in transformers)") if os.path.exists(
                os.path.join(directory, "pytorch_model.bin")) else ""
    raise ValueError(f"{directory} has no weights: neither {' nor '.join(WEIGHT_FILES)}{hint}")


def _read_safetensors(path):
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except Exception as error:  # safetensors raises its own error type for a damaged file
        raise ValueError(f"{path} is not a complete safetensors file (truncated or corrupt): "
                         f"{_first_line(error)}") from None
    return Weights(path, tensors.items())


def _read_h5(path):
    """`TFMarianMTModel`'s Keras weights file: each top-level layer's group lists its weights'
    TensorFlow names (`weight_names`), named as transformers'
    `convert_tf_weight_name_to_pt_weight_name` names them for PyTorch (the first scope dropped,
    `kernel` transposed into `weight`, `embeddings`/`gamma` → `weight`, `beta` → `bias`)."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            arrays = []
            for layer in _attribute(file, "layer_names"):
                group = file[layer]
                for tf_name in _attribute(group, "weight_names"):
                    arrays.append(_pytorch_name(tf_name, np.asarray(group[tf_name])))
    except (OSError, KeyError) as error:
        raise ValueError(f"{path} is not a complete Keras weights file of TFMarianMTModel: "
                         f"{_first_line(error)}") from None
    return Weights(path, arrays)


def _attribute(group, name):
    """The list of names `name` of an h5 `group`, which Keras splits into `name0`, `name1`, ...
    when too long for one attribute."""
    chunks = [group.attrs[name]] if name in group.attrs else []
    while f"{name}{len(chunks)}" in group.attrs:
        chunks.append(group.attrs[f"{name}{len(chunks)}"])
    if not chunks:
        raise KeyError(f"no attribute {name!r}")
    return [value.decode() if isinstance(value, bytes) else str(value)
            for chunk in chunks for value in chunk]


def _pytorch_name(tf_name, value):
    """`(PyTorch name, value)` of the TensorFlow weight `tf_name`."""
    parts = tf_name.removesuffix(":0").split("/")
    parts = parts[1:] if len(parts) > 1 else parts
    if parts[-1] == "kernel":
        value = value.T
    parts[-1] = {"kernel": "weight", "embeddings": "weight", "gamma": "weight",
                 "beta": "bias"}.get(parts[-1], parts[-1])
    return ".".join(parts), value


def _first_line(error):
    return str(error).splitlines()[0] if str(error) else type(error).__name__


#: The weight files of Hugging Face's layout, in the order they are looked for, and their
#: readers.
WEIGHT_FILES = {"model.safetensors": _read_safetensors, "tf_model.h5": _read_h5}
#: The file that marks Marian's own layout.
NATIVE_DECODER_CONFIG = "decoder.yml"


def _hugging_face_vocabularies(directory, config):
    """`[(file name, {token: id})]` of the source and target vocabularies."""
    separate = not config["share_encoder_decoder_embeddings"]
    tokenizer_config = os.path.join(directory, TOKENIZER_SETTINGS)
    if os.path.exists(tokenizer_config):
        separate = bool(_read_json(tokenizer_config, "the tokenizer settings").get(
            "separate_vocabs", separate))
    names = ["vocab.json", "target_vocab.json" if separate else "vocab.json"]
    return [(name, _read_json(os.path.join(directory, name), "the vocabulary"))
            for name in names]


def _tokenizers(directory, config, vocabularies):
    """The source and target `MarianTokenizer`s of the checkpoint."""
    from keras_s2s.data.tokenizers import MarianTokenizer

    separate = vocabularies[0] != vocabularies[1]
    sizes = [config["vocab_size"], config["vocab_size"] if not separate
             else config["decoder_vocab_size"]]
    expected = {"end_id": config["eos_token_id"], "pad_id": config["pad_token_id"]}
    tokenizers = []
    for model_name, (vocabulary_name, ids), size in zip(("source.spm", "target.spm"),
                                                        vocabularies, sizes):
        model_path = os.path.join(directory, model_name)
        if not os.path.exists(model_path):
            raise ValueError(f"{model_path} is missing (a SentencePiece model)")
        with open(model_path, "rb") as file:
            proto = file.read()
        vocabulary = _vocabulary(ids, os.path.join(directory, vocabulary_name), size)
        try:
            tokenizer = MarianTokenizer(proto, vocabulary)
        except RuntimeError as error:  # sentencepiece's parse error
            raise ValueError(f"{model_path} is not a SentencePiece model: "
                             f"{str(error).splitlines()[0]}") from None
        for name, value in expected.items():
            if getattr(tokenizer, name) != value:
                raise ValueError(f"{vocabulary_name}: its {name} {getattr(tokenizer, name)} is "
                                 f"not config.json's {value}")
        tokenizers.append(tokenizer)
    return tokenizers


def _vocabulary(ids, path, size):
    """The tokens of `ids` (token → id, read from `path`) in id order, checked against the
    model's size."""
    if not isinstance(ids, dict) or sorted(ids.values()) != list(range(len(ids))):
        raise ValueError(f"{path} must map tokens to the ids 0..n-1, each once")
    if len(ids) != size:
        raise ValueError(f"{path} has {len(ids)} tokens but the model's vocabulary has {size}")
    vocabulary = [None] * len(ids)
    for token, token_id in ids.items():
        vocabulary[token_id] = token
    return vocabulary


def _model(config, weights):
    """Our `Transformer` with the checkpoint's weights."""
    from keras_s2s.models import Transformer

    options = _model_options(config)
    model = Transformer(*_vocabulary_sizes(config), **options)
    model.build()
    take = _Weights(weights)
    if options["share_embeddings"]:
        take.into(model.source_embedding.embeddings, "shared.weight",
                  "encoder.embed_tokens.weight")
    else:
        take.into(model.source_embedding.embeddings, "encoder.embed_tokens.weight")
        take.into(model.target_embedding.embeddings, "decoder.embed_tokens.weight")
    table = _positional_table(model)
    for key in ("encoder.embed_positions.weight", "decoder.embed_positions.weight"):
        if key in weights and not np.allclose(weights[key][:len(table)], table, atol=1e-4):
            raise ValueError(f"{weights.file}: {key} holds positional embeddings that are "
                             f"not Marian's sinusoids (learned positions are not supported)")
    for index, layer in enumerate(model.encoder_layers):
        prefix = f"encoder.layers.{index}."
        _attention(layer.self_attention, take, prefix + "self_attn.")
        _layer_norm(layer.self_attention_norm, take, prefix + "self_attn_layer_norm.")
        _feed_forward(layer, take, prefix)
    for index, layer in enumerate(model.decoder_layers):
        prefix = f"decoder.layers.{index}."
        _attention(layer.self_attention, take, prefix + "self_attn.")
        _layer_norm(layer.self_attention_norm, take, prefix + "self_attn_layer_norm.")
        _attention(layer.cross_attention, take, prefix + "encoder_attn.")
        _layer_norm(layer.cross_attention_norm, take, prefix + "encoder_attn_layer_norm.")
        _feed_forward(layer, take, prefix)
    bias = np.reshape(weights.get("final_logits_bias", np.zeros(
        model.target_vocab_size, "float32")), (-1,))
    if options["tie_embeddings"]:
        take.set(model.output_bias, bias, "final_logits_bias")
    else:
        take.into(model.output_projection.kernel, "lm_head.weight", transform=np.transpose)
        take.set(model.output_projection.bias, bias, "final_logits_bias")
    return model


def _positional_table(model):
    """The model's positional encodings of every position, `(max_length, d_model)`."""
    from keras import ops

    return ops.convert_to_numpy(model.positional_encoding(
        np.zeros((1, model.max_length, model.d_model), "float32"))[0])


class _Weights:
    """The checkpoint's arrays, assigned to our variables with their shapes checked: a missing
    or misshapen weight is a one-line ValueError naming it."""

    def __init__(self, weights):
        self.weights = weights

    def into(self, variable, name, fallback=None, transform=None):
        """Assign the weight `name` (or `fallback`), through `transform`, to `variable`."""
        for key in (name, fallback):
            if key is not None and key in self.weights:
                value = self.weights[key]
                self.set(variable, value if transform is None else transform(value), key)
                return
        raise ValueError(f"{self.weights.file} has no weight {name!r}")

    def set(self, variable, value, name):
        if tuple(value.shape) != tuple(variable.shape):
            try:
                value = np.reshape(value, variable.shape)
            except ValueError:
                raise ValueError(f"{self.weights.file}: {name} has shape {value.shape}, the "
                                 f"configuration implies {tuple(variable.shape)}") from None
        variable.assign(value)


def _attention(layer, take, prefix):
    """Hugging Face's q/k/v/out projections `(out, in)` as our `(D, H, k)` kernels: Q Wᵀ
    reshaped per head (their heads are consecutive blocks of the output, as ours)."""
    for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"),
                         ("output", "out_proj")):
        take.into(getattr(layer, f"{ours}_kernel"), f"{prefix}{theirs}.weight",
                  transform=np.transpose)
        take.into(getattr(layer, f"{ours}_bias"), f"{prefix}{theirs}.bias")


def _layer_norm(layer, take, prefix):
    take.into(layer.gamma, prefix + "weight")
    take.into(layer.beta, prefix + "bias")


def _feed_forward(layer, take, prefix):
    for dense, name in ((layer.feed_forward.inner_dense, "fc1"),
                        (layer.feed_forward.output_dense, "fc2")):
        take.into(dense.kernel, f"{prefix}{name}.weight", transform=np.transpose)
        take.into(dense.bias, f"{prefix}{name}.bias")
    _layer_norm(layer.feed_forward_norm, take, prefix + "final_layer_norm.")
