"""SavedModel export: parity with the Translator in a process without keras_s2s, versions."""

import collections.abc
import functools
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_s2s.exporters import savedmodel as export
from keras_s2s.cli import main
from keras_s2s.training.config import TrainConfig
from keras_s2s import run as run_files
from keras_s2s.data import synthetic
from keras_s2s.data.pipeline import encode_source
from keras_s2s.data.tokenizers import train_tokenizers
from keras_s2s.decoding import Beam, Greedy
from keras_s2s.exporters.savedmodel import export_run
from keras_s2s.serving import Client
from keras_s2s.serving.config import ModelConfig, ServerOptions
from keras_s2s.serving.server import ModelServer
from keras_s2s.inference.translator import Translator

MODEL_ARGS = {
    "seq2seq": {"embedding_dim": 16, "units": 32},
    "bahdanau": {"embedding_dim": 16, "units": 32},
    "luong": {"embedding_dim": 16, "units": 32},
    "transformer": {"num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 64},
}
MAX_SOURCE_LENGTH, MAX_TARGET_LENGTH = 12, 10
PAIRS = synthetic.generate("reverse", 200, seed=0, max_length=6)
#: Short inputs, an empty one and one longer than MAX_SOURCE_LENGTH (truncated).
TEXTS = [source for source, _ in PAIRS[:3]] + ["", " ".join("abcdefghijklmnopq")]


def make_run_dir(directory, arch, model_args=None, prepare=None, tokenizer="wordpiece"):
    """A run directory of an untrained tiny model: what `train` writes, in a second.

    `model_args` override `MODEL_ARGS[arch]`; `prepare(model)` may change the built model's
    weights before it is saved."""
    keras.utils.set_random_seed(0)
    config = TrainConfig(arch=arch, data="reverse", out=str(directory), vocab_size=60,
                         max_source_length=MAX_SOURCE_LENGTH,
                         max_target_length=MAX_TARGET_LENGTH, tokenizer=tokenizer,
                         model={**MODEL_ARGS[arch], **(model_args or {})})
    source_tokenizer, target_tokenizer = train_tokenizers(PAIRS, config.vocab_size,
                                                          kind=tokenizer)
    model = config.build_model(source_tokenizer.vocabulary_size,
                               target_tokenizer.vocabulary_size)
    model.build()
    if prepare is not None:
        prepare(model)
    return run_files.save_run(str(directory), config, model, source_tokenizer, target_tokenizer)


# test_tflite.py imports these fixtures too; pytest would build them once per module that
# holds them, so the work is cached once per test run (one base temporary directory) here.
#: The runs beside one per architecture: a Transformer tokenized by SentencePiece.
SENTENCEPIECE_RUN = "transformer_unigram"
RUNS = [*MODEL_ARGS, SENTENCEPIECE_RUN]


@functools.cache
def _tiny_runs(base_temp):
    runs = {arch: make_run_dir(base_temp / "runs" / arch, arch) for arch in MODEL_ARGS}
    runs[SENTENCEPIECE_RUN] = make_run_dir(base_temp / "runs" / SENTENCEPIECE_RUN,
                                           "transformer", tokenizer="unigram")
    return runs


#: The shared exports: one greedy export per run, and a beam-search one of luong.
EXPORTS = [*RUNS, "luong_beam"]


@functools.cache
def _export(base_temp, name):
    runs, base_path = _tiny_runs(base_temp), str(base_temp / "export")
    if name == "luong_beam":
        return export_run(runs["luong"], name, base_path=base_path, strategy=Beam(3))
    return export_run(runs[name], name, base_path=base_path)


class _Exports(collections.abc.Mapping):
    """Version directories of EXPORTS, each exported on first use: a module that reads one
    export (test_export_signatures.py, serving/test_warmup.py) waits for that one alone."""

    def __init__(self, base_temp):
        self.base_temp = base_temp

    def __getitem__(self, name):
        if name not in EXPORTS:
            raise KeyError(name)
        return _export(self.base_temp, name)

    def __contains__(self, name):
        return name in EXPORTS

    def __iter__(self):
        return iter(EXPORTS)

    def __len__(self):
        return len(EXPORTS)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Run directory of each architecture."""
    return _tiny_runs(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    """Version directories: one greedy export per architecture, and a beam-search one."""
    return _Exports(tmp_path_factory.getbasetemp())


#: Loads each export with tensorflow and tensorflow_text only (keras_s2s cannot be imported),
#: runs both signatures and lists the graph's op types.
LOADER = r"""
import json, sys

class RefuseKerasS2S:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "keras_s2s":
            raise ImportError("keras_s2s must not be needed to load an export")

sys.meta_path.insert(0, RefuseKerasS2S())
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops)
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

report = {}
for name, job in json.loads(sys.argv[1]).items():
    model = tf.saved_model.load(job["path"])
    texts = model.signatures["serving_default"](inputs=tf.constant(job["texts"]))
    ids = model.signatures["translate_ids"](source_ids=tf.constant(job["source_ids"], tf.int32))
    saved_model = saved_model_pb2.SavedModel()
    with open(job["path"] + "/saved_model.pb", "rb") as file:
        saved_model.ParseFromString(file.read())
    graph = saved_model.meta_graphs[0].graph_def
    op_types = {node.op for node in graph.node} | {
        node.op for function in graph.library.function for node in function.node_def}
    report[name] = {
        "outputs": [text.decode("utf-8") for text in texts["outputs"].numpy()],
        "scores": texts["scores"].numpy().tolist(),
        "ids": {key: value.numpy().tolist() for key, value in ids.items()},
        "op_types": sorted(op_types),
        "unregistered": sorted(op for op in op_types if op_def_registry.get(op) is None),
    }
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def translators(tiny_runs):
    return {arch: Translator.load(run_dir) for arch, run_dir in tiny_runs.items()}


def _source_ids(translator):
    return encode_source(TEXTS, translator.source_tokenizer,
                         translator.max_source_length).numpy()


@pytest.fixture(scope="module")
def loaded_elsewhere(exports, translators):
    jobs = {name: {"path": path, "texts": TEXTS, "source_ids": _source_ids(
        translators[name.removesuffix("_beam")]).tolist()} for name, path in exports.items()}
    assert SENTENCEPIECE_RUN in jobs
    completed = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(jobs)], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", [*RUNS, "luong_beam"])
def test_export_gives_the_translators_outputs_without_keras_s2s(name, loaded_elsewhere,
                                                                translators):
    strategy = Beam(3) if name.endswith("_beam") else Greedy()
    translator = translators[name.removesuffix("_beam")]
    expected = translator.translate(TEXTS, strategy=strategy)
    served = loaded_elsewhere[name]
    assert served["outputs"][TEXTS.index("")] == "" and served["scores"][TEXTS.index("")] == 0

    assert served["outputs"] == [translation.text for translation in expected]
    np.testing.assert_allclose(served["scores"], [t.score for t in expected], atol=1e-5)
    ids = {key: np.array(value) for key, value in served["ids"].items()}
    assert ids["output_ids"].shape == (len(TEXTS), MAX_TARGET_LENGTH)
    np.testing.assert_allclose(ids["scores"], served["scores"], atol=1e-6)
    source_lengths = np.count_nonzero(_source_ids(translator), axis=1)
    assert source_lengths.max() == MAX_SOURCE_LENGTH  # the long input was truncated
    for row, translation in enumerate(expected):
        length = ids["lengths"][row]
        assert [translator.target_tokenizer.id_to_token(int(token_id))
                for token_id in ids["output_ids"][row, :length]] == translation.output_tokens
        assert not ids["output_ids"][row, length:].any()
        if translation.attention is None:
            assert "attention" not in ids
        else:
            np.testing.assert_allclose(
                ids["attention"][row, :length, :source_lengths[row]], translation.attention,
                atol=1e-5)


@pytest.mark.parametrize("name", [*RUNS, "luong_beam"])
def test_export_holds_only_ops_tf_serving_links(name, loaded_elsewhere):
    op_types = loaded_elsewhere[name]["op_types"]
    tokenizer_op = ("TFText>FastSentencepieceTokenize" if name == SENTENCEPIECE_RUN
                    else "FastWordpieceTokenizeWithOffsets")
    assert "While" in op_types and tokenizer_op in op_types
    assert not {"PyFunc", "PyFuncStateless", "EagerPyFunc"} & set(op_types)
    # XLA-only kernels run in TF Serving only with its experimental XLA JIT flag.
    assert not [op for op in op_types if op.startswith("Xla")]
    assert loaded_elsewhere[name]["unregistered"] == []  # beyond TF core + tensorflow-text


def test_saved_model_cli_lists_the_signatures(exports):
    completed = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "show", "--dir",
         exports["bahdanau"], "--all"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    for expected in ("signature_def['serving_default']", "inputs['inputs']",
                     "outputs['outputs']", "outputs['scores']",
                     "signature_def['translate_ids']", "inputs['source_ids']",
                     "outputs['output_ids']", "outputs['lengths']", "outputs['attention']"):
        assert expected in completed.stdout


def test_export_carries_the_run_files(exports, tiny_runs):
    assert run_files.Run.open(exports["seq2seq"]).directory == os.path.join(
        exports["seq2seq"], run_files.EXPORT_RUN_FILES)
    assert run_files.Run.open(tiny_runs["seq2seq"]).directory == tiny_runs["seq2seq"]
    with pytest.raises(FileNotFoundError, match="not a trained run directory"):
        run_files.Run.open(os.path.dirname(exports["seq2seq"]))


def test_versions_count_up_and_are_never_overwritten(tiny_runs, tmp_path, capsys,
                                                     monkeypatch):
    def save_stand_in(module, directory, signatures):  # the real export is tested above
        with open(os.path.join(directory, "saved_model.pb"), "wb") as file:
            file.write(b"stand-in")

    monkeypatch.setattr(export.tf.saved_model, "save", save_stand_in)
    arguments = ["export", tiny_runs["seq2seq"], "--model-name", "reverse", "--base-path",
                 str(tmp_path)]
    assert main(arguments) == 0
    assert main(arguments + ["--version", "7"]) == 0
    assert main(arguments) == 0
    printed = capsys.readouterr().out.split()
    model_dir = tmp_path / "reverse"
    assert printed == [str(model_dir / version) for version in ("1", "7", "8")]
    assert sorted(os.listdir(model_dir)) == ["1", "7", "8"]  # no temporary directory left

    (model_dir / "7" / "saved_model.pb").write_bytes(b"version 7")
    assert main(arguments + ["--version", "7"]) == 2
    assert f"{model_dir / '7'}' already exists" in capsys.readouterr().err
    assert (model_dir / "7" / "saved_model.pb").read_bytes() == b"version 7"


def test_a_failed_export_leaves_no_version_behind(tiny_runs, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export.tf.saved_model, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        export_run(tiny_runs["seq2seq"], "reverse", base_path=str(tmp_path))
    assert os.listdir(tmp_path / "reverse") == []


@pytest.mark.parametrize("arguments, message", [
    ({"model_name": "a/b"}, "model_name must be one path component, got 'a/b'"),
    ({"model_name": "m", "version": -1}, "version must be a non-negative int or None, got -1"),
    ({"model_name": "m", "strategy": "beam"}, "strategy must be a decoding strategy such as "),
])
def test_bad_arguments_are_named(arguments, message, tiny_runs, tmp_path):
    with pytest.raises(ValueError, match=message):
        export_run(tiny_runs["seq2seq"], base_path=str(tmp_path), **arguments)


def test_keras_s2s_serve_answers_like_the_translator(exports, translators, tmp_path, capsys):
    """An exported model behind `keras-s2s serve`, called through the REST client and through
    `keras-s2s translate --server grpc://HOST:PORT/MODEL`."""
    base_path = tmp_path / "bahdanau"
    shutil.copytree(exports["bahdanau"], base_path / "1")
    options = ServerOptions(models=[ModelConfig("bahdanau", str(base_path))], rest_api_port=0,
                            port=0)
    with ModelServer(options) as server:
        served = Client(server.url, "bahdanau").translate(TEXTS)
        capsys.readouterr()
        assert main(["translate", "--server", f"grpc://127.0.0.1:{server.grpc_port}/bahdanau",
                     "--scores", *TEXTS]) == 0
    expected = translators["bahdanau"].translate(TEXTS)
    assert [result["translation"] for result in served] == [t.text for t in expected]
    np.testing.assert_allclose([result["score"] for result in served],
                               [t.score for t in expected], atol=1e-4)
    over_grpc = [line.split("\t", 1) for line in capsys.readouterr().out.split("\n")[:-1]]
    assert [text for _, text in over_grpc] == [t.text for t in expected]
    np.testing.assert_allclose([float(score) for score, _ in over_grpc],
                               [t.score for t in expected], atol=2e-4)


def _serve_in_process(version_dir, texts, calls=2):
    """`serving_default` outputs of `calls` calls on `texts`, as lists of strings."""
    import tensorflow as tf

    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    return [signature(inputs=tf.constant(texts))["outputs"].numpy().tolist()
            for _ in range(calls)]


def test_export_samples_repeatably_with_a_seed_and_afresh_without(tiny_runs, tmp_path,
                                                                  capsys):
    texts = [source for source, _ in PAIRS[:6]]
    versions = {}
    for name, seed in (("seeded", ["--seed", "1"]), ("fresh", [])):
        assert main(["export", tiny_runs["seq2seq"], "--model-name", name, "--base-path",
                     str(tmp_path), "--temperature", "1.5", "--top-p", "0.95", *seed]) == 0
        versions[name] = capsys.readouterr().out.strip()
    first, second = _serve_in_process(versions["seeded"], texts)
    assert first == second
    first, second = _serve_in_process(versions["fresh"], texts)
    assert first != second


def test_export_of_n_best_gives_every_hypothesis(tiny_runs, translators, tmp_path):
    version_dir = export_run(tiny_runs["seq2seq"], "n_best", base_path=str(tmp_path),
                             strategy=Beam(3, n_best=2))
    [outputs] = _serve_in_process(version_dir, TEXTS, calls=1)
    expected = translators["seq2seq"].translate(TEXTS, strategy=Beam(3, n_best=2))
    assert [[text.decode("utf-8") for text in row] for row in outputs] == [
        [t.text] + [a.text for a in t.alternatives] if t.alternatives else [t.text, ""]
        for t in expected]


def test_the_constrained_signature_answers_like_the_translator(exports, translators):
    """Every export's `constrained` signature: the Translator's outputs for the same prefixes,
    phrases ("" = none) and settings, each width a request chooses; bounds checked in the
    graph, with one line."""
    import tensorflow as tf

    texts, prefixes = TEXTS[:3] + [""], ["q", "", "a b", "c"]
    constraints = [["x y", ""], ["", ""], ["z", "b"], ["a", ""]]
    signature = tf.saved_model.load(exports["luong"]).signatures["constrained"]

    def request(beam_width=3, alpha=0.3, n_best=2, **changes):
        arguments = {"inputs": texts, "prefixes": prefixes, "constraints": constraints,
                     **changes}
        return signature(**{name: tf.constant(value) for name, value in arguments.items()},
                         beam_width=tf.constant(beam_width), alpha=tf.constant(alpha),
                         n_best=tf.constant(n_best))

    for width, n_best in ((3, 2), (1, 1)):
        answer = request(width, n_best=n_best)
        expected = translators["luong"].translate(
            texts, Beam(width, alpha=0.3, n_best=n_best), attention=False, prefixes=prefixes,
            constraints=[[phrase for phrase in row if phrase] for row in constraints])
        hypotheses = [[t, *t.alternatives] for t in expected]
        assert answer["outputs"].numpy().astype(str).tolist() == [
            [h.text for h in row] + [""] * (n_best - len(row)) for row in hypotheses]
        np.testing.assert_allclose(answer["scores"].numpy(), [
            [h.score for h in row] + [0.0] * (n_best - len(row)) for row in hypotheses],
            atol=1e-4)
    for changes, message in (
            ({"beam_width": 10_000}, "beam_width must be an int in [1, 256], got 10000"),
            ({"alpha": float("nan")}, "alpha must be a number in [0, 10.0], got nan"),
            ({"n_best": 4}, "n_best must be an int in [1, beam_width], got 4"),
            ({"prefixes": prefixes[:2]}, "the rows of prefixes must be one per input, got 2"),
            ({"constraints": constraints[:1]},
             "the rows of constraints must be one per input, got 1"),
            ({"prefixes": ["a " * 10] * 4}, "the tokens of a prefix must be at most 9 "
                                            "(max_target_length 10 less END), got 10"),
            ({"constraints": [["a b c d e", "f g h i j"]] * 4},
             "the tokens of the constraints of an input must be at most 9 (max_target_length "
             "10 less END), got 10")):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"\nassertion failed: \[{re.escape(message)}\]\n"):
            request(**changes)
