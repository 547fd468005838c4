"""Training pieces: the masked, label-smoothed loss, masked token accuracy, the Transformer's
warm-up learning-rate schedule and the optimizers of the recipe.

Padding (id 0) never counts: loss and accuracy are averages over real target tokens.
"""

import keras
from keras import ops

from keras_s2s.special_tokens import PAD_ID


def _token_mask(y_true, pad_id):
    return ops.cast(ops.not_equal(y_true, pad_id), "float32")  # (B, T)


@keras.saving.register_keras_serializable(package="keras_s2s")
class MaskedSparseCrossentropy(keras.losses.Loss):
    """Token-level cross-entropy from logits, with label smoothing, averaged over non-pad tokens.

    With smoothing ε the target distribution is (1 − ε)·one_hot(y) + ε/V (Szegedy et al., 2016;
    the Transformer paper uses ε = 0.1).

    Shapes: `y_true (B, T)` int ids, `y_pred (B, T, V)` logits → scalar.
    """

    def __init__(self, label_smoothing=0.0, pad_id=PAD_ID, name="masked_sparse_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)  # (B, T, V)
        true_log_probs = ops.take_along_axis(
            log_probs, ops.expand_dims(y_true, -1), axis=-1)[..., 0]  # (B, T)
        losses = -(1.0 - self.label_smoothing) * true_log_probs
        if self.label_smoothing:
            losses = losses - self.label_smoothing * ops.mean(log_probs, axis=-1)
        mask = _token_mask(y_true, self.pad_id)
        return ops.sum(losses * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="keras_s2s")
class MaskedAccuracy(keras.metrics.Metric):
    """Fraction of non-pad target tokens whose arg-max prediction is right (token-weighted)."""

    def __init__(self, pad_id=PAD_ID, name="masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pad_id = pad_id
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        mask = _token_mask(y_true, self.pad_id)
        if sample_weight is not None:
            mask = mask * ops.cast(sample_weight, "float32")
        hits = ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), y_true), "float32")
        self.correct.assign_add(ops.sum(hits * mask))
        self.count.assign_add(ops.sum(mask))

    def result(self):
        return self.correct / ops.maximum(self.count, 1.0)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="keras_s2s")
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lrate = scale · d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5) (paper, §5.3).

    Linear warm-up for `warmup_steps`, then decay with the inverse square root of the step.
    `scale` > 1 suits small models and data (a common adjustment; the paper uses 1).
    """

    def __init__(self, d_model, warmup_steps=4000, scale=1.0):
        for name, value in (("d_model", d_model), ("warmup_steps", warmup_steps)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.d_model = d_model
        self.warmup_steps = warmup_steps
        self.scale = scale

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0  # optimizer iterations start at 0
        return self.scale * self.d_model ** -0.5 * ops.minimum(
            ops.rsqrt(step), step * self.warmup_steps ** -1.5)

    def get_config(self):
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps, "scale": self.scale}


def transformer_optimizer(d_model, warmup_steps=4000, scale=1.0):
    """Adam(β₁=0.9, β₂=0.98, ε=1e-9) with the warm-up schedule, as in the paper."""
    return keras.optimizers.Adam(
        TransformerSchedule(d_model, warmup_steps, scale), beta_1=0.9, beta_2=0.98, epsilon=1e-9)


def rnn_optimizer(learning_rate=1e-3, clipnorm=1.0):
    """Adam with gradient-norm clipping, the usual recipe for RNN encoder–decoders."""
    return keras.optimizers.Adam(learning_rate, clipnorm=clipnorm)


def compile_for_training(model, optimizer, label_smoothing=0.1, jit_compile="auto"):
    """Compile `model` with the masked label-smoothed loss and masked accuracy."""
    model.compile(optimizer=optimizer,
                  loss=MaskedSparseCrossentropy(label_smoothing=label_smoothing),
                  metrics=[MaskedAccuracy()], jit_compile=jit_compile)
    return model
