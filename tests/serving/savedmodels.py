"""Tiny SavedModels for the serving tests, built with tf.Module + tf.function signatures."""

import os
import shutil
import uuid

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2


class HalfPlusOffset(tf.Module):
    """TF Serving's half_plus_two test model: y = 0.5 * x + offset (offset 2 = half_plus_two)."""

    def __init__(self, offset):
        super().__init__()
        self.offset = tf.Variable(offset, dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def predict(self, x):
        return {"y": 0.5 * x + self.offset}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def times_two(self, x):
        return {"y": 2.0 * x}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def with_batch_size(self, x):
        """Also returns, per row, the size of the batch it ran in (shows server-side batching)."""
        return {"y": 0.5 * x + self.offset, "batch_size": tf.fill(tf.shape(x), tf.shape(x)[0])}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="rows")])
    def row_sums(self, rows):
        """Any row length: shows batching keeping requests of different shapes apart."""
        return {"sums": tf.reduce_sum(rows, axis=1)}

    def _parse_x(self, inputs):
        return tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([], tf.float32)})["x"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": 0.5 * self._parse_x(inputs) + self.offset}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        high = tf.sigmoid(0.5 * self._parse_x(inputs) + self.offset - 3.0)
        classes = tf.tile(tf.constant([["low", "high"]]), [tf.shape(high)[0], 1])
        return {"classes": classes, "scores": tf.stack([1.0 - high, high], axis=1)}


class StringModel(tf.Module):
    """String signatures shaped like keras-s2s's export: inputs -> outputs, scores."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def translate(self, inputs):
        return {
            "outputs": tf.strings.upper(inputs),
            "scores": tf.cast(tf.strings.length(inputs), tf.float32) / 4.0,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="payload_bytes")])
    def raw_bytes(self, payload_bytes):
        return {
            "payload_bytes": tf.strings.join([payload_bytes, tf.constant(b"\xff")]),
            "size": tf.strings.length(payload_bytes),
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="a"),
            tf.TensorSpec([None], tf.string, name="b"),
        ]
    )
    def pair(self, a, b):
        return {"joined": tf.strings.join([a, b], separator=" ")}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 2], tf.int32, name="ints"),
            tf.TensorSpec([None], tf.bool, name="flags"),
            tf.TensorSpec([None], tf.int64, name="wide"),
        ]
    )
    def typed(self, ints, flags, wide):
        return {"sum": tf.reduce_sum(ints, axis=1), "negated": tf.logical_not(flags), "wide": wide}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float16, name="h")])
    def halves(self, h):
        return {"h": h}


def _set_method_names(path, method_names):
    """tf.saved_model.save writes every signature as predict; classify/regress ones get their
    names."""
    pb_path = os.path.join(path, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(pb_path, "rb") as file:
        saved_model.ParseFromString(file.read())
    for key, method_name in method_names.items():
        saved_model.meta_graphs[0].signature_def[key].method_name = method_name
    with open(pb_path, "wb") as file:
        file.write(saved_model.SerializeToString())


def save_half_plus(path, offset):
    module = HalfPlusOffset(offset)
    signatures = {
        "serving_default": module.predict,
        "times_two": module.times_two,
        "with_batch_size": module.with_batch_size,
        "row_sums": module.row_sums,
        "regress_x_to_y": module.regress,
        "classify_x_to_y": module.classify,
    }
    tf.saved_model.save(module, path, signatures=signatures)
    _set_method_names(
        path,
        {
            "regress_x_to_y": "tensorflow/serving/regress",
            "classify_x_to_y": "tensorflow/serving/classify",
        },
    )
    return path


def save_string_model(path):
    module = StringModel()
    signatures = {
        "serving_default": module.translate,
        "raw_bytes": module.raw_bytes,
        "pair": module.pair,
        "typed": module.typed,
        "halves": module.halves,
    }
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def save_tf1_counter_model(path):
    """A TF1 SavedModel with reference variables (`float_ref`), like TF Serving's
    saved_model_counter: `serving_default` is y = a * x + b; `incr_counter_by` adds `delta` to a
    counter and returns the assign op's (reference-typed) output, as the original does. Built in
    graph mode with use_resource=False, saved with SavedModelBuilder."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        a = tf.compat.v1.get_variable("a", initializer=0.5, use_resource=False)
        b = tf.compat.v1.get_variable("b", initializer=2.0, use_resource=False)
        counter = tf.compat.v1.get_variable("counter", initializer=0.0, use_resource=False)
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        delta = tf.compat.v1.placeholder(tf.float32, [], name="delta")
        session.run(tf.compat.v1.global_variables_initializer())
        signature = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def
        builder = tf.compat.v1.saved_model.Builder(path)
        builder.add_meta_graph_and_variables(
            session,
            [tf.compat.v1.saved_model.tag_constants.SERVING],
            signature_def_map={
                "serving_default": signature({"x": x}, {"y": tf.add(a * x, b, name="y")}),
                "incr_counter_by": signature(
                    {"delta": delta}, {"output": tf.compat.v1.assign_add(counter, delta)}
                ),
            },
        )
        builder.save()
    return path


def publish_version(source, base_path, version):
    """Copies a SavedModel into `base_path/<version>` atomically (copy beside it, then rename),
    the way exports should appear under a polled base path."""
    staging = os.path.join(base_path, f".staging-{uuid.uuid4().hex}")
    shutil.copytree(source, staging)
    os.rename(staging, os.path.join(base_path, str(version)))


def publish_broken_version(base_path, version):
    staging = os.path.join(base_path, f".staging-{uuid.uuid4().hex}")
    os.makedirs(staging)
    with open(os.path.join(staging, "saved_model.pb"), "wb") as file:
        file.write(b"this is not a SavedModel\x00\xff")
    os.rename(staging, os.path.join(base_path, str(version)))


#: Signature keys of TF Serving's TF1 test models: saved_model_half_plus_two (its generator's
#: names) and saved_model_half_plus_three (the keys its REST guide's requests name).
HALF_PLUS_TWO_KEYS = {
    "serving_default": "predict",
    "regress_x_to_y": "regress",
    "classify_x_to_y": "classify",
}
HALF_PLUS_THREE_KEYS = {
    "serving_default": "predict",
    "tensorflow/serving/predict": "predict",
    "tensorflow/serving/regress": "regress",
    "tensorflow/serving/classify": "classify",
}


def save_tf1_half_plus(path, offset, signature_keys):
    """TF Serving's TF1 half_plus_two/three test model, with its shapes: serialized Examples
    `tf_example` [None] are parsed into `x` = FixedLenFeature([1]) (so x:0 is [None, 1]) and
    y = 0.5 * x + offset; predict feeds x:0 directly, regress/classify feed `tf_example`."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        a = tf.compat.v1.Variable(0.5, name="a")
        b = tf.compat.v1.Variable(offset, name="b")
        examples = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        features = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(features["x"], name="x")
        y = tf.identity(a * x + b, name="y")
        session.run(tf.compat.v1.global_variables_initializer())
        utils = tf.compat.v1.saved_model
        builders = {
            "predict": lambda: utils.predict_signature_def({"x": x}, {"y": y}),
            "regress": lambda: utils.regression_signature_def(examples, y),
            "classify": lambda: utils.classification_signature_def(examples, None, y),
        }
        builder = utils.Builder(path)
        builder.add_meta_graph_and_variables(
            session,
            [utils.tag_constants.SERVING],
            signature_def_map={key: builders[kind]() for key, kind in signature_keys.items()},
        )
        builder.save()
    return path


def write_warmup_records(version_dir, records):
    """Writes serialized records (PredictionLogs, or anything) as the warm-up file of
    `version_dir`."""
    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
