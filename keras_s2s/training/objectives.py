"""What training optimizes and reports, as backend-neutral Keras objects: the masked,
label-smoothed loss, masked token accuracy, the Transformer's warm-up learning-rate schedule, the
linear decay to zero over a run's budget and the families' optimizers (no TensorFlow import, so
a model trains on JAX or PyTorch alone).

Padding (id 0) never counts: loss and accuracy are averages over real target tokens.
"""

import time

import keras
from keras import ops

from keras_s2s.checks import check_fraction, check_number, check_positive_int
from keras_s2s.special_tokens import PAD_ID


def _token_mask(y_true, pad_id):
    return ops.cast(ops.not_equal(y_true, pad_id), "float32")  # (B, T)


def _summed_over_replicas(value):
    """`value` summed over the replicas of the TensorFlow distribution strategy it is computed
    under (itself without one, and on other backends)."""
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce("SUM", value)


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
        check_fraction("label_smoothing", label_smoothing)
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id

    def call(self, y_true, y_pred):
        """The loss sum of these rows over the real tokens of the whole batch: under a
        `tf.distribute` strategy each replica holds some rows of the batch, and the replicas'
        losses (their gradients, which the strategy sums) add up to the batch's token mean."""
        return (ops.sum(self.token_losses(y_true, y_pred))
                / ops.maximum(_summed_over_replicas(ops.sum(self.token_mask(y_true))), 1.0))

    def token_mask(self, y_true):
        """1.0 at the real target tokens of `y_true (B, T)`, 0.0 at padding."""
        return _token_mask(ops.cast(y_true, "int32"), self.pad_id)

    def token_losses(self, y_true, y_pred):
        """Each token's smoothed cross-entropy `(B, T)`, 0.0 at padding."""
        y_true = ops.cast(y_true, "int32")
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)  # (B, T, V)
        true_log_probs = ops.take_along_axis(
            log_probs, ops.expand_dims(y_true, -1), axis=-1)[..., 0]  # (B, T)
        losses = -(1.0 - self.label_smoothing) * true_log_probs
        if self.label_smoothing:
            losses = losses - self.label_smoothing * ops.mean(log_probs, axis=-1)
        return losses * self.token_mask(y_true)

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
        check_positive_int("d_model", d_model)
        check_positive_int("warmup_steps", warmup_steps)
        check_number("scale", scale, 0.0, low_inclusive=False)
        self.d_model = d_model
        self.warmup_steps = warmup_steps
        self.scale = scale

    @property
    def peak(self):
        """The highest rate, reached at the end of the warm-up: scale · (d_model · warmup)^-0.5."""
        return self.scale * (self.d_model * self.warmup_steps) ** -0.5

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0  # optimizer iterations start at 0
        return self.scale * self.d_model ** -0.5 * ops.minimum(
            ops.rsqrt(step), step * self.warmup_steps ** -1.5)

    def get_config(self):
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps, "scale": self.scale}


@keras.saving.register_keras_serializable(package="keras_s2s")
class Adam(keras.optimizers.Adam):
    """Keras's Adam, given dense gradients.

    On TensorFlow an embedding's gradient is a `tf.IndexedSlices` holding one slice per token
    occurrence, and Keras 3.15's Adam squares the slices one by one: a row's second moment
    becomes the sum of its occurrences' squared gradients instead of the square of their sum,
    so a token seen k times in a batch with gradients of one sign steps up to √k times too far
    (and one seen with gradients of both signs too short). Made dense first, the gradients get
    the paper's Adam. (JAX and PyTorch gradients are dense already.)
    """

    def apply(self, grads, trainable_variables=None):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                     for g in grads]
        return super().apply(grads, trainable_variables)


class LinearDecay(keras.callbacks.Callback):
    """Warm-up, then a learning rate falling linearly to zero when the run's budget is spent.

    Budgeted training (Li, Yumer & Ramanan, ICLR 2020): when the budget is known in advance, a
    rate that reaches zero as it runs out beats the usual schedules cut short by it. Before step
    s (0-based) the optimizer's rate becomes `peak · min(1, (s + 1) / warmup_steps) · (1 − p)`,
    where p is the larger of the fractions spent of `epochs` epochs of `steps_per_epoch` steps
    and of `seconds` of wall-clock time on `clock` since training began (either budget may be
    None, not both). Steps are counted from the epoch and batch indices `fit` gives (not the
    optimizer's iterations, which Keras also advances when a dataset of unknown length runs
    out), so a resumed run goes on where it stopped. The optimizer must have a plain rate, not
    a schedule. Each epoch's logs get the rate the next epoch starts at as `learning_rate` (as
    Keras's `LearningRateScheduler` logs its rate), so it must come before the callbacks
    recording them.
    """

    def __init__(self, peak, warmup_steps, epochs=None, steps_per_epoch=None, seconds=None,
                 clock=time.monotonic):
        super().__init__()
        check_number("peak", peak, 0.0, low_inclusive=False)
        check_positive_int("warmup_steps", warmup_steps)
        if (epochs is None) != (steps_per_epoch is None):
            raise ValueError("LinearDecay needs both epochs and steps_per_epoch, or neither")
        if epochs is None and seconds is None:
            raise ValueError("LinearDecay needs the budget's end: epochs (with steps_per_epoch) "
                             "or seconds")
        if epochs is not None:
            check_positive_int("epochs", epochs)
            check_positive_int("steps_per_epoch", steps_per_epoch)
        check_number("seconds", seconds, 0.0, low_inclusive=False, optional=True)
        self.peak, self.warmup_steps, self.seconds = peak, warmup_steps, seconds
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.clock = clock

    def rate(self, step, elapsed_seconds):
        """The rate before step `step`, `elapsed_seconds` into training."""
        spent = max(step / (self.epochs * self.steps_per_epoch) if self.epochs else 0.0,
                    elapsed_seconds / self.seconds if self.seconds else 0.0)
        return self.peak * min(1.0, (step + 1) / self.warmup_steps) * max(0.0, 1.0 - spent)

    def _rate_now(self, epoch, batch):
        return self.rate(epoch * (self.steps_per_epoch or 0) + batch,
                         self.clock() - self._started if self.seconds else 0.0)

    def on_train_begin(self, logs=None):
        self._started = self.clock() if self.seconds else 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self._rate_now(self._epoch, batch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self._rate_now(epoch + 1, 0)


def transformer_optimizer(d_model, warmup_steps=4000, scale=1.0, linear_decay=False):
    """Adam(β₁=0.9, β₂=0.98, ε=1e-9) with the warm-up schedule, as in the paper; with
    `linear_decay`, a plain rate starting at the schedule's peak, for `LinearDecay` to set."""
    schedule = TransformerSchedule(d_model, warmup_steps, scale)
    return Adam(schedule.peak if linear_decay else schedule, beta_1=0.9, beta_2=0.98,
                epsilon=1e-9)


def rnn_optimizer(learning_rate=1e-3, clipnorm=1.0):
    """Adam with gradient-norm clipping, the usual recipe for RNN encoder–decoders."""
    return Adam(learning_rate, clipnorm=clipnorm)


def rnn_optimizer_for(model, config, learning_rate):
    """The RNN families' optimizer for a run: `learning_rate` is Adam's rate (the peak of
    `LinearDecay` with `config.decay == "linear"`)."""
    return rnn_optimizer(learning_rate)


def transformer_optimizer_for(model, config, learning_rate):
    """The Transformer's optimizer for a run: `learning_rate` scales the Noam schedule; with
    `config.decay == "linear"` the rate starts at that schedule's peak, for `LinearDecay`."""
    return transformer_optimizer(model.d_model, config.warmup_steps, learning_rate,
                                 linear_decay=config.decay == "linear")


def compile_for_training(model, optimizer, label_smoothing=0.1, jit_compile="auto",
                         pad_id=PAD_ID):
    """Compile `model` with the masked label-smoothed loss and masked accuracy (`pad_id`: the
    target vocabulary's padding, left out of both)."""
    model.compile(optimizer=optimizer,
                  loss=MaskedSparseCrossentropy(label_smoothing=label_smoothing, pad_id=pad_id),
                  metrics=[MaskedAccuracy(pad_id=pad_id)], jit_compile=jit_compile)
    return model
