"""The model families: the one place that knows each family's class, presets and optimizer.

A family is registered here (the built-in four) or by another installed package through the
entry-point group `keras_s2s.architectures`, whose value is a `Family`:

    [project.entry-points."keras_s2s.architectures"]
    my_family = "my_package.family:FAMILY"

Then `keras-s2s train --arch my_family` works like a built-in family. Listing the names
imports neither TensorFlow nor any model (the CLI's parser needs them, and `--help` must be
fast); a family's model class and optimizer are imported when it is first used.
"""

import dataclasses
import importlib
from importlib import metadata

ENTRY_POINT_GROUP = "keras_s2s.architectures"


@dataclasses.dataclass(frozen=True)
class Family:
    """What training, decoding and export need to know about a model family.

    Args:
        model: `"module:Class"` of a `keras_s2s.models.Seq2SeqModel` subclass, or the class.
        presets: the model's arguments when the user overrides none: small enough to train
            on a laptop CPU in minutes.
        optimizer: `"module:function"` (or the function) taking `(model, config,
            learning_rate)` and returning the Keras optimizer to train with.
        learning_rate: the `learning_rate` the optimizer gets when the run sets none; what
            it means is the optimizer's (Adam's rate for the RNNs, the scale of the
            Transformer's schedule), so a benchmark tuning it scales this value.
        length_argument: the model argument, if any, that must hold the longest sequence the
            run trains or decodes (e.g. the Transformer's positional range `max_length`).
        ctranslate2: `"module:function"` (or the function) taking a trained model of the
            family and returning its `ctranslate2.specs` model specification (weights set,
            vocabularies not yet registered), or None when CTranslate2 cannot run the family.
    """

    model: object
    presets: dict
    optimizer: object = "keras_s2s.training.objectives:rnn_optimizer_for"
    length_argument: str | None = None
    learning_rate: float = 1e-3
    ctranslate2: object = None

    def model_class(self):
        return _resolve(self.model)

    def build(self, source_vocab_size, target_vocab_size, arguments, longest_sequence):
        """A new model with `presets` updated by `arguments`."""
        arguments = {**self.presets, **arguments}
        if self.length_argument:
            arguments.setdefault(self.length_argument, longest_sequence)
        return self.model_class()(source_vocab_size, target_vocab_size, **arguments)

    def make_optimizer(self, model, config):
        """The optimizer for `model` in the run `config` (a `TrainConfig`)."""
        return _resolve(self.optimizer)(model, config, config.learning_rate or self.learning_rate)

    def ctranslate2_spec(self, model):
        """The CTranslate2 specification of `model` (the family must have a converter)."""
        return _resolve(self.ctranslate2)(model)


def _resolve(target):
    """`"module:attribute"` → the attribute; anything else is returned as it is."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _layer(class_name, **config):
    """A layer argument as JSON (what `keras.layers.serialize` writes), for presets."""
    return {"class_name": f"keras_s2s>{class_name}", "config": config}


_RNN = {"embedding_dim": 128, "units": 256, "num_layers": 1, "dropout": 0.1}

BUILT_IN = {
    "seq2seq": Family("keras_s2s.models:Seq2Seq", {**_RNN, "cell": "lstm"}),
    "bahdanau": Family("keras_s2s.models:AttentionSeq2Seq", {
        **_RNN, "cell": "gru", "bidirectional_encoder": True,
        "attention": _layer("BahdanauAttention", units=_RNN["units"]),
        "step_order": "attend_then_update"}),
    "luong": Family("keras_s2s.models:AttentionSeq2Seq", {
        **_RNN, "cell": "lstm", "bidirectional_encoder": True,
        "attention": _layer("LuongAttention", score="general"),
        "step_order": "update_then_attend", "input_feeding": False}),
    "transformer": Family(
        "keras_s2s.models:Transformer",
        {"num_layers": 3, "d_model": 128, "num_heads": 4, "d_ff": 512, "dropout": 0.1,
         "normalize_first": False, "tie_embeddings": False},
        optimizer="keras_s2s.training.objectives:transformer_optimizer_for",
        length_argument="max_length",
        learning_rate=1.0, ctranslate2="keras_s2s.exporters.ctranslate2:transformer_spec"),
}


def _plugins():
    return {entry.name: entry for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def names():
    """Every family's name, built-in first (no family is imported)."""
    return list(BUILT_IN) + sorted(set(_plugins()) - set(BUILT_IN))


def get(name):
    """The `Family` called `name`; an unknown name is a ValueError listing the known ones."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    plugin = _plugins().get(name)
    if plugin is None:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(names())}")
    family = plugin.load()
    if not isinstance(family, Family):
        raise ValueError(f"the entry point {name!r} of {ENTRY_POINT_GROUP!r} ({plugin.value}) "
                         f"is a {type(family).__name__}, not a keras_s2s.architectures.Family")
    return family
