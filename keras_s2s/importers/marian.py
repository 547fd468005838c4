"""Import an OPUS-MT / Marian checkpoint in Hugging Face's layout as a keras-s2s run directory.

`import_marian(source, out)` reads a local Hugging Face Marian directory (or downloads a hub name
such as `Helsinki-NLP/opus-mt-ko-en` with `huggingface_hub`, when installed):

- `config.json` (`model_type: marian`): post-norm encoder and decoder stacks with one layer
  count, head count and feed-forward width, the `swish` / `gelu` / `relu` activation, optional
  √d_model embedding scaling, sinusoids with every sine before every cosine, `final_logits_bias`;
- the weights, `model.safetensors` (read with `safetensors.numpy`, no PyTorch needed);
- `source.spm`, `target.spm`, `vocab.json` (and `target_vocab.json` for separate
  vocabularies), which become two `keras_s2s.data.tokenizers.MarianTokenizer`s.

Every weight goes to the same place of our `keras_s2s.models.Transformer`, built with the
matching options and the checkpoint's own special ids (`</s>` ends, `<pad>` pads and starts the
decoder): nothing is permuted. The run is written beside `out` under a hidden name and renamed
into place, so a failure never leaves a half-written run. Marian's native layout (`model.npz`
with `decoder.yml`) and TensorFlow's `tf_model.h5` are refused with a one-line error.
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

#: The files read from a Hugging Face checkpoint (what a hub download fetches).
FILES = ("config.json", "model.safetensors", "source.spm", "target.spm", "vocab.json",
         "target_vocab.json", "tokenizer_config.json")

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
    config = _read_config(directory)
    if max_length is None:
        max_length = min(DEFAULT_MAX_LENGTH, config["max_position_embeddings"])
    if not isinstance(max_length, int) or not 2 <= max_length <= (
            config["max_position_embeddings"]):
        raise ValueError(f"max_length must be an int in [2, "
                         f"{config['max_position_embeddings']}] (the checkpoint's "
                         f"max_position_embeddings), got {max_length!r}")
    weights = _read_weights(directory)
    source_tokenizer, target_tokenizer = _tokenizers(directory, config)
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


def _read_config(directory):
    """`config.json`, checked to describe a model our Transformer holds exactly."""
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path) and os.path.exists(os.path.join(directory, "model.npz")):
        raise ValueError(f"{directory} holds a Marian-native checkpoint (model.npz, "
                         f"decoder.yml), not yet importable; convert it with Hugging Face's "
                         f"convert_marian_to_pytorch first")
    config = _read_json(path, "the model configuration")
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


def _model_options(config):
    """The `Transformer` arguments of a checked Marian `config`."""
    shared = config["share_encoder_decoder_embeddings"]
    tied = config["tie_word_embeddings"]
    return {
        "source_vocab_size": config["vocab_size"],
        "target_vocab_size": config["vocab_size"] if shared else config["decoder_vocab_size"],
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


def _read_weights(directory):
    """`{name: float32 array}` of `model.safetensors`, names without the `model.` prefix."""
    path = os.path.join(directory, "model.safetensors")
    if not os.path.exists(path):
        others = [name for name in ("pytorch_model.bin", "tf_model.h5")
                  if os.path.exists(os.path.join(directory, name))]
        hint = (f" ({others[0]} is there: save the checkpoint with safetensors, e.g. "
                f"save_pretrained in transformers)") if others else ""
        raise ValueError(f"{path} is missing (the weights){hint}")
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except Exception as error:  # safetensors raises its own error type for a damaged file
        raise ValueError(f"{path} is not a complete safetensors file (truncated or corrupt): "
                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
                         ) from None
    return {name.removeprefix("model."): np.asarray(value, "float32")
            for name, value in tensors.items()}


def _tokenizers(directory, config):
    """The source and target `MarianTokenizer`s of the checkpoint."""
    from keras_s2s.data.tokenizers import MarianTokenizer

    separate = not config["share_encoder_decoder_embeddings"]
    tokenizer_config = os.path.join(directory, "tokenizer_config.json")
    if os.path.exists(tokenizer_config):
        separate = bool(_read_json(tokenizer_config, "the tokenizer settings").get(
            "separate_vocabs", separate))
    vocabularies = ["vocab.json", "target_vocab.json" if separate else "vocab.json"]
    sizes = [config["vocab_size"], config["vocab_size"] if not separate
             else config["decoder_vocab_size"]]
    expected = {"end_id": config["eos_token_id"], "pad_id": config["pad_token_id"]}
    tokenizers = []
    for model_name, vocabulary_name, size in zip(("source.spm", "target.spm"), vocabularies,
                                                 sizes):
        model_path = os.path.join(directory, model_name)
        if not os.path.exists(model_path):
            raise ValueError(f"{model_path} is missing (a SentencePiece model)")
        with open(model_path, "rb") as file:
            proto = file.read()
        vocabulary = _vocabulary(os.path.join(directory, vocabulary_name), size)
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


def _vocabulary(path, size):
    """The tokens of `vocab.json` (token → id) in id order, checked against the model's size."""
    ids = _read_json(path, "the vocabulary")
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
    model = Transformer(**options)
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
            raise ValueError(f"model.safetensors: {key} holds positional embeddings that are "
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
        options["target_vocab_size"], "float32")), (-1,))
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
        raise ValueError(f"model.safetensors has no weight {name!r}")

    @staticmethod
    def set(variable, value, name):
        if tuple(value.shape) != tuple(variable.shape):
            try:
                value = np.reshape(value, variable.shape)
            except ValueError:
                raise ValueError(f"model.safetensors: {name} has shape {value.shape}, the "
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
