"""Export a trained run to CTranslate2 (OpenNMT's C++ inference engine), with its tokenizers.

`export_ctranslate2(run_dir, out_dir, quantize)` writes `out_dir` with CTranslate2's model files
(built with its Python specification API, `ctranslate2.specs`), the run's two tokenizers' files
and a copy of the run's configuration (the layout is `keras_s2s.run`'s), so that
`keras_s2s.inference.translator.CTranslate2Translator` (and `keras-s2s translate` /
`evaluate`) tokenize with our tokenizers and decode with `ctranslate2.Translator`. The
directory is also a plain CTranslate2 model: `ctranslate2.Translator(out_dir)` translates our
subword tokens, the source ending with `[END]` as our sources do (the caller appends it, rather
than the model's configuration, so that CTranslate2's attention covers it as ours does).

What the converter carries over exactly (so CTranslate2 float32 gives our outputs):

- the token embeddings, scaled by √d_model as ours, and our sinusoidal positional encodings as
  a table (`position_encodings`): CTranslate2's own sinusoids put all sines before all cosines,
  ours interleave them;
- pre-norm (with the final layer norms) or post-norm layers, the one layer-norm epsilon, the
  FFN activation, 1/√(d/H) attention scaling (CTranslate2's default), fused query/key/value
  projections (CTranslate2's layout: `[Wq; Wk; Wv]`, each `(d, d)` as `(out, in)`);
- tied embeddings (the target embedding as the output projection);
- our decoding rule that padding and START are never produced: their output bias is set to
  `FORBIDDEN_LOGIT`, so the softmax renormalises over the other tokens, as
  `keras_s2s.decoding` does;
- the cross-attention weights averaged over the heads of the last layer (`alignment_heads`),
  the attention our `Translation.attention` holds.

Families say whether they convert (`keras_s2s.architectures.Family.ctranslate2`); CTranslate2
runs Transformers, not RNN encoder-decoders.
"""

import logging
import os
import shutil
import tempfile

import numpy as np
from keras import ops

from keras_s2s import architectures
from keras_s2s import run as run_files
from keras_s2s.checks import check_choice
from keras_s2s.exporters import CTRANSLATE2_QUANTIZATIONS
from keras_s2s.special_tokens import END, START, UNK

logger = logging.getLogger(__name__)

QUANTIZATIONS = CTRANSLATE2_QUANTIZATIONS

#: Output bias of the tokens never produced (fits float16, and vanishes in the softmax).
FORBIDDEN_LOGIT = -1e4


def export_ctranslate2(run, out_dir, quantize="none"):
    """Convert a trained run into the new directory `out_dir`; returns it.

    Args:
        run: a `keras_s2s.run.Run` (or its directory) whose family has a CTranslate2
            converter.
        out_dir: the directory to create; an existing path is an error, never overwritten.
        quantize: one of `QUANTIZATIONS`, the type of the exported weights.
    """
    check_choice("quantize", quantize, QUANTIZATIONS)
    run = run_files.Run.of(run)
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir!r} already exists and is never overwritten; choose "
                              f"another --out")
    config = run.config
    family = architectures.get(config.arch)
    if family.ctranslate2 is None:
        raise ValueError(f"the {config.arch!r} family cannot be exported to CTranslate2: it "
                         f"runs Transformer encoder-decoders, not RNN encoder-decoders")
    import ctranslate2  # noqa: F401  (a clear ImportError before the model loads)

    source_tokenizer, target_tokenizer = run.source_tokenizer, run.target_tokenizer
    spec = family.ctranslate2_spec(run.model)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-", dir=parent)
    try:
        vocabulary = target_tokenizer.vocabulary
        save_spec(spec, source_tokenizer.vocabulary, vocabulary, staging_dir, quantize,
                  special_tokens=tuple(vocabulary[getattr(target_tokenizer, f"{name}_id")]
                                       for name in ("unk", "start", "end")))
        run_files.save_tokenizers(staging_dir, source_tokenizer, target_tokenizer)
        config.save(run_files.ctranslate2_config_path(staging_dir))
        tuned = os.path.join(run.directory, run_files.DECODING)  # `tune-alpha`'s α, for --beam
        if os.path.exists(tuned):
            shutil.copy2(tuned, staging_dir)
        os.chmod(staging_dir, 0o755)  # mkdtemp makes it private
        os.rename(staging_dir, out_dir)
    except BaseException:
        shutil.rmtree(staging_dir, ignore_errors=True)
        raise
    logger.info("exported %s to CTranslate2 (%s) in %s", run.directory, quantize, out_dir)
    return out_dir


def save_spec(spec, source_vocabulary, target_vocabulary, directory, quantize="none",
              special_tokens=(UNK, START, END)):
    """Write the CTranslate2 model of `spec` (from a family's converter) into `directory`, with
    our vocabularies and `special_tokens` (unknown, start, end), its weights of type `quantize`
    (`QUANTIZATIONS`)."""
    check_choice("quantize", quantize, QUANTIZATIONS)
    spec.register_source_vocabulary(list(source_vocabulary))
    spec.register_target_vocabulary(list(target_vocabulary))
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = special_tokens
    spec.config.decoder_start_token = special_tokens[1]
    spec.validate()
    spec.optimize(quantization=None if quantize == "none" else quantize)
    spec.save(directory)


def _activation(name):
    from ctranslate2.specs.common_spec import Activation

    activations = {"relu": Activation.RELU, "gelu": Activation.GELU,
                   "silu": Activation.SWISH, "swish": Activation.SWISH}
    if name not in activations:
        raise ValueError(f"CTranslate2 has no {name!r} feed-forward activation; known: "
                         f"{', '.join(activations)}")
    return activations[name]


def _linear(spec, kernel, bias=None):
    """A Keras kernel `(in, out)` (and bias) into a CTranslate2 linear `(out, in)`."""
    spec.weight = np.ascontiguousarray(np.asarray(kernel, "float32").T)
    if bias is not None:
        spec.bias = np.asarray(bias, "float32")


def _layer_norm(spec, layer):
    spec.gamma, spec.beta = layer.gamma.numpy(), layer.beta.numpy()


def _attention(spec, layer, self_attention):
    """Our (D, H, k) projections as CTranslate2's: fused [q; k; v] (self-attention) or q and
    fused [k; v] (cross-attention), then the output projection."""
    def projection(name):
        kernel = getattr(layer, f"{name}_kernel").numpy()
        return kernel.reshape(kernel.shape[0], -1), getattr(layer, f"{name}_bias").numpy().ravel()

    groups = [["query", "key", "value"]] if self_attention else [["query"], ["key", "value"]]
    for linear, names in zip(spec.linear, groups):
        kernels, biases = zip(*map(projection, names))
        _linear(linear, np.concatenate(kernels, axis=1), np.concatenate(biases))
    output_kernel = layer.output_kernel.numpy()
    _linear(spec.linear[-1], output_kernel.reshape(-1, output_kernel.shape[-1]),
            layer.output_bias.numpy())


def _feed_forward(spec, layer, norm):
    _layer_norm(spec.layer_norm, norm)
    for linear, dense in ((spec.linear_0, layer.inner_dense), (spec.linear_1, layer.output_dense)):
        _linear(linear, dense.kernel.numpy(), dense.bias.numpy())


def transformer_spec(model):
    """The `ctranslate2.specs.TransformerSpec` of a `keras_s2s.models.Transformer`."""
    from ctranslate2.specs import transformer_spec as specs

    layers = [*model.encoder_layers, *model.decoder_layers]
    epsilons = {layer.layer_norm_epsilon for layer in layers}
    if model.normalize_first:
        epsilons |= {model.encoder_norm.epsilon, model.decoder_norm.epsilon}
    activations = {layer.activation for layer in layers}
    if len(epsilons) > 1 or len(activations) > 1 or not all(
            layer.self_attention.use_bias for layer in layers):
        raise ValueError(f"CTranslate2 takes one layer-norm epsilon and one activation in all "
                         f"layers, and attention biases; got epsilons {sorted(epsilons)}, "
                         f"activations {sorted(activations)}")
    options = dict(pre_norm=model.normalize_first, activation=_activation(activations.pop()))
    encoder = specs.TransformerEncoderSpec(model.num_layers, model.num_heads, **options)
    decoder = specs.TransformerDecoderSpec(model.num_layers, model.num_heads,
                                           alignment_heads=model.num_heads, **options)
    positions = ops.convert_to_numpy(model.positional_encoding(
        np.zeros((1, model.max_length, model.d_model), "float32"))[0])  # (max_length, d)
    encoder.embeddings[0].weight = model.source_embedding.embeddings.numpy()
    decoder.embeddings.weight = model.target_embedding.embeddings.numpy()
    encoder.position_encodings.encodings = decoder.position_encodings.encodings = positions
    encoder.scale_embeddings = decoder.scale_embeddings = model.scale_embeddings

    for spec, layer in zip(encoder.layer, model.encoder_layers):
        _attention(spec.self_attention, layer.self_attention, self_attention=True)
        _layer_norm(spec.self_attention.layer_norm, layer.self_attention_norm)
        _feed_forward(spec.ffn, layer.feed_forward, layer.feed_forward_norm)
    for spec, layer in zip(decoder.layer, model.decoder_layers):
        _attention(spec.self_attention, layer.self_attention, self_attention=True)
        _layer_norm(spec.self_attention.layer_norm, layer.self_attention_norm)
        _attention(spec.attention, layer.cross_attention, self_attention=False)
        _layer_norm(spec.attention.layer_norm, layer.cross_attention_norm)
        _feed_forward(spec.ffn, layer.feed_forward, layer.feed_forward_norm)
    if model.normalize_first:
        _layer_norm(encoder.layer_norm, model.encoder_norm)
        _layer_norm(decoder.layer_norm, model.decoder_norm)

    if model.tie_embeddings:
        kernel = model.target_embedding.embeddings.numpy().T  # (d, V)
        bias = (model.output_bias.numpy().copy() if model.tied_output_bias
                else np.zeros(model.target_vocab_size, "float32"))
    else:
        kernel = model.output_projection.kernel.numpy()
        bias = model.output_projection.bias.numpy().copy()
    bias[[model.pad_id, model.start_id]] = FORBIDDEN_LOGIT
    _linear(decoder.projection, kernel, bias)

    spec = specs.TransformerSpec(encoder, decoder)
    spec.config.layer_norm_epsilon = float(epsilons.pop())
    return spec
