"""Warm-up requests: TF Serving's `assets.extra/tf_serving_warmup_requests` of a SavedModel.

The file is a TFRecord of `tensorflow.serving.PredictionLog` protos. `keras-s2s export` writes
one, and `keras-s2s serve` replays it before a version becomes AVAILABLE, as TF Serving does
(`saved_model_warmup_util.cc`): at most 1,000 records, each run `num_request_iterations` times;
a record that cannot be read, parsed or run fails the load of that version with the reason in
its status. Replaying does TensorFlow's one-time work (instantiating and optimizing each
signature's graph, creating its kernels, initializing lookup tables) at load time, so the first
client request is as fast as the tenth.
"""

import logging
import os
import time

import tensorflow as tf
from google.protobuf import message
from tensorflow_serving.apis import prediction_log_pb2

from keras_s2s.serving.errors import ServingError, error_from_exception

logger = logging.getLogger(__name__)

#: Where TF Serving looks for warm-up records, relative to a version directory.
WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
#: TF Serving refuses warm-up files with more records (WarmupConsts::kMaxNumRecords).
MAX_RECORDS = 1000


def write_warmup_requests(version_dir, requests):
    """Writes `requests`, (signature name, {input alias: numpy array}) pairs, as PredictLogs to
    the warm-up file of `version_dir`; returns the file's path."""
    if len(requests) > MAX_RECORDS:
        raise ValueError(f"{len(requests)} warm-up requests; TF Serving reads at most "
                         f"{MAX_RECORDS}")
    path = os.path.join(version_dir, WARMUP_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests:
            log = prediction_log_pb2.PredictionLog()
            request = log.predict_log.request
            request.model_spec.signature_name = signature_name
            for alias, value in inputs.items():
                request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
            writer.write(log.SerializeToString())
    return path


def replay_warmup_requests(servable, iterations=1):
    """Runs the warm-up records of `servable`'s version, each `iterations` times; returns how many
    records there were (0 without a warm-up file). Raises `ServingError` with TF Serving's
    reasons: a file that is no TFRecord (DATA_LOSS), a record that is no PredictionLog or
    asks for what the version does not have (INVALID_ARGUMENT), more than 1,000 records."""
    from keras_s2s.serving import metrics  # the serve extra's; writing records needs only the core

    path = os.path.join(servable.path, WARMUP_PATH)
    if not tf.io.gfile.exists(path):
        logger.info("No warmup data file found at %s", path)
        return 0
    start, count, status = time.monotonic(), 0, "OK"
    try:
        for record in _records(path):
            count += 1
            if count > MAX_RECORDS:
                raise ServingError("INVALID_ARGUMENT", f"Number of warmup records exceeds the "
                                                       f"maximum ({MAX_RECORDS}) at {path}")
            log = _prediction_log(record, path)
            if log.WhichOneof("log_type") is None:
                continue  # TF Serving skips records that log nothing
            signature, inputs = _request_of(log, servable)
            for _ in range(iterations):
                signature.run(inputs)
    except Exception as exception:
        error = error_from_exception(exception)
        status = f"{error.code}: {error.message}"
        raise error from None
    finally:
        metrics.record_warmup(servable.path, status, count, time.monotonic() - start)
    logger.info("Finished reading warmup data for model at %s. Number of warmup records read: "
                "%d. Elapsed time (seconds): %.3f.", path, count, time.monotonic() - start)
    return count


def _records(path):
    try:
        for record in tf.data.TFRecordDataset(path):
            yield record.numpy()
    except tf.errors.DataLossError as error:
        raise ServingError("DATA_LOSS", f"{error.message}. Please verify your warmup data is "
                                        f"in TFRecord format.") from None


def _prediction_log(record, path):
    try:
        return prediction_log_pb2.PredictionLog.FromString(record)
    except message.DecodeError:
        raise ServingError("INVALID_ARGUMENT",
                           f"Failed to parse warmup record: {record[:64]!r} from {path}") from None


def _request_of(log, servable):
    """The signature a PredictionLog asks for, and its inputs as numpy arrays."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        inputs = {alias: tf.make_ndarray(tensor) for alias, tensor in request.inputs.items()}
    elif kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        inputs = [example.SerializeToString() for example in request.input.example_list.examples]
    else:
        raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind}")
    signature = servable.signature(request.model_spec.signature_name
                                  or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY)
    if isinstance(inputs, list):  # Examples feed the signature's one input
        if len(signature.input_dtypes) != 1:
            raise ServingError("INVALID_ARGUMENT", f"Expected one input Tensor in signature "
                                                   f"{signature.name}, got "
                                                   f"{sorted(signature.input_dtypes)}")
        inputs = dict.fromkeys(signature.input_dtypes, inputs)
    if set(inputs) != set(signature.input_dtypes):
        raise ServingError("INVALID_ARGUMENT",
                           f"Warmup record for signature {signature.name} has inputs "
                           f"{sorted(inputs)}; the signature takes "
                           f"{sorted(signature.input_dtypes)}")
    return signature, inputs
