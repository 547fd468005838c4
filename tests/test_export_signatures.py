"""The export's per-request signatures `beam`, `sample` and `constrained`: the Translator's
outputs for the same settings, called directly and through `keras-s2s serve`, and their
bounds."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

from keras_s2s.cli import main
from keras_s2s.decoding import Beam, Sample
from keras_s2s.inference.translator import Translator
from keras_s2s.serving.config import ModelConfig, ServerOptions
from keras_s2s.serving.server import ModelServer
from tests.serving.conftest import http
from tests.test_export import TEXTS, exports, tiny_runs  # noqa: F401  (pytest fixtures)

BEAM = {"beam_width": 3, "alpha": 0.6, "n_best": 2}
#: A prefix and two phrases for each of TEXTS' first three (target-side letters).
GUIDES = {"prefixes": ["p", "", "s f"], "constraints": [["k", "i p"], ["c e", ""], ["g", ""]]}


@pytest.fixture(scope="module")
def loaded(exports):  # noqa: F811
    return tf.saved_model.load(exports["transformer"])


def _call(loaded_model, signature_name, texts, **settings):
    dtypes = {"alpha": tf.float32, "temperature": tf.float32, "top_p": tf.float32}
    result = loaded_model.signatures[signature_name](
        inputs=tf.constant(texts),
        **{name: tf.constant(value, dtypes.get(name, tf.int32))
           for name, value in settings.items()})
    return result["outputs"].numpy().astype(str).tolist(), result["scores"].numpy()


def _hypotheses(translation, n_best):
    """A Translation's texts and scores, best first, padded as the export pads empty inputs."""
    best = [translation, *translation.alternatives]
    padding = n_best - len(best)
    return [t.text for t in best] + [""] * padding, [t.score for t in best] + [0.0] * padding


def test_beam_signature_gives_the_translators_beam_search(loaded, tiny_runs):  # noqa: F811
    outputs, scores = _call(loaded, "beam", TEXTS, **BEAM)
    expected = Translator.load(tiny_runs["transformer"]).translate(
        TEXTS, strategy=Beam(3, alpha=0.6, n_best=2), attention=False)
    for row, translation in enumerate(expected):
        texts, expected_scores = _hypotheses(translation, 2)
        assert outputs[row] == texts
        np.testing.assert_allclose(scores[row], expected_scores, atol=1e-4)


def test_sample_signature_gives_the_translators_sampling(loaded, tiny_runs):  # noqa: F811
    translator = Translator.load(tiny_runs["transformer"])
    for settings, strategy in (
            ({"temperature": 1.5, "top_k": 7, "top_p": 0.9, "seed": 11},
             Sample(1.5, top_k=7, top_p=0.9, seed=11)),
            ({"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 3}, Sample(0.0))):
        # One text: the Translator's noise depends on the row, and it sorts rows by length.
        outputs, scores = _call(loaded, "sample", TEXTS[:1], **settings)
        [expected] = translator.translate(TEXTS[:1], strategy=strategy, attention=False)
        assert outputs == [expected.text], settings
        np.testing.assert_allclose(scores, [expected.score], atol=1e-4)
    fresh = {"temperature": 100.0, "top_k": 0, "top_p": 1.0, "seed": -1}
    assert len({tuple(_call(loaded, "sample", TEXTS[:3], **fresh)[0])
                for _ in range(3)}) > 1  # a negative seed draws afresh


@pytest.mark.parametrize("signature_name, settings, message", [
    ("beam", {**BEAM, "beam_width": 10_000}, "beam_width must be an int in [1, 256], got 10000"),
    ("beam", {**BEAM, "alpha": float("nan")}, "alpha must be a number in [0, 10.0], got nan"),
    ("beam", {**BEAM, "n_best": 4}, "n_best must be an int in [1, beam_width], got 4"),
    ("sample", {"temperature": 1e-4, "top_k": 0, "top_p": 1.0, "seed": 1},
     "temperature must be 0 (greedy search) or a number in [0.001, 100.0], got 0.0001"),
    ("sample", {"temperature": 1.0, "top_k": 0, "top_p": 0.0, "seed": 1},
     "top_p must be a number in (0, 1], got 0"),
])
def test_settings_out_of_bounds_are_named(signature_name, settings, message, loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        _call(loaded, signature_name, TEXTS[:2], **settings)


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):  # noqa: F811
    base_path = tmp_path_factory.mktemp("served") / "transformer"
    shutil.copytree(exports["transformer"], base_path / "1")
    options = ServerOptions(models=[ModelConfig("transformer", str(base_path))],
                            rest_api_port=0, port=0)
    with ModelServer(options) as running:
        yield running


def _predict(server, signature_name, texts, **settings):
    return http(server.url, "POST", "/v1/models/transformer:predict",
                {"signature_name": signature_name, "inputs": {"inputs": texts, **settings}})


def test_rest_beam_request_gives_the_signatures_outputs(server, loaded):
    response = _predict(server, "beam", TEXTS, **BEAM)
    assert response.status == 200, response.text
    outputs, scores = _call(loaded, "beam", TEXTS, **BEAM)
    assert response.json["outputs"]["outputs"] == outputs
    np.testing.assert_allclose(response.json["outputs"]["scores"], scores, atol=1e-5)


def test_rest_bad_setting_is_a_one_line_400_and_the_server_answers_on(server):
    response = _predict(server, "beam", TEXTS, **{**BEAM, "beam_width": 10_000})
    assert response.status == 400
    assert response.json == {"error": "assertion failed: [beam_width must be an int in "
                                      "[1, 256], got 10000]"}
    assert _predict(server, "beam", TEXTS[:1], **BEAM).status == 200


def test_rest_constrained_request_gives_the_translators_guided_beam_search(
        server, tiny_runs):  # noqa: F811
    response = _predict(server, "constrained", TEXTS[:3], **BEAM, **GUIDES)
    assert response.status == 200, response.text
    expected = Translator.load(tiny_runs["transformer"]).translate(
        TEXTS[:3], strategy=Beam(3, alpha=0.6, n_best=2), attention=False,
        prefixes=GUIDES["prefixes"],
        constraints=[[phrase for phrase in row if phrase] for row in GUIDES["constraints"]])
    for row, translation in enumerate(expected):
        texts, scores = _hypotheses(translation, 2)
        assert response.json["outputs"]["outputs"][row] == texts
        np.testing.assert_allclose(response.json["outputs"]["scores"][row], scores, atol=1e-4)
    too_long = {**GUIDES, "prefixes": ["p " * 12] * 3}
    response = _predict(server, "constrained", TEXTS[:3], **BEAM, **too_long)
    assert response.status == 400
    assert response.json == {"error": "assertion failed: [the tokens of a prefix must be at "
                                      "most 9 (max_target_length 10 less END), got 12]"}
    assert _predict(server, "constrained", TEXTS[:3], **BEAM, **GUIDES).status == 200


def test_the_serving_readmes_requests_of_each_signature_are_answered(server):
    readme = (Path(__file__).parents[1] / "serving" / "README.md").read_text(encoding="utf-8")
    bodies = re.findall(r"-d '(\{\"signature_name\": \"(?:beam|sample|constrained)\".*)'",
                        readme)
    assert len(bodies) == 3
    for body in bodies:
        response = http(server.url, "POST", "/v1/models/transformer:predict",
                        json.loads(body))
        assert response.status == 200, response.text


def test_translate_through_the_server_takes_the_local_decoding_flags(
        server, tiny_runs, capsys):  # noqa: F811
    texts = TEXTS[:3]
    printed = {}
    targets = {"local": [tiny_runs["transformer"]],
               "server": ["--server", server.url, "--model", "transformer"],
               "grpc": ["--server", f"grpc://127.0.0.1:{server.grpc_port}/transformer"]}
    for where, target in targets.items():
        for flags in (["--beam", "4", "--n-best", "2"],
                      ["--temperature", "0.7", "--top-k", "5", "--seed", "2"],
                      ["--beam", "2", "--prefix", "p", "--constraint", "i", "--constraint", "k"]):
            assert main(["translate", *target, *texts[:1 if "--seed" in flags else 3],
                         *flags, "--scores"]) == 0
            printed[where, tuple(flags)] = [line.split("\t") for line in
                                            capsys.readouterr().out.splitlines()]
    for where, flags in printed:
        local, served = printed["local", flags], printed[where, flags]
        assert [text for _, text in served] == [text for _, text in local], (where, flags)
        np.testing.assert_allclose([float(score) for score, _ in served],
                                   [float(score) for score, _ in local], atol=2e-4)


def test_translate_through_the_server_needs_beam_search_for_a_prefix(capsys):
    assert main(["translate", "--server", "http://127.0.0.1:9", "--model", "m", "a b",
                 "--prefix", "p"]) == 2
    assert capsys.readouterr().err.endswith(
        "error: --prefix and --constraint through --server need --beam WIDTH (the export's "
        "constrained signature is a beam search)\n")
