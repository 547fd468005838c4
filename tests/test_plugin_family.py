"""A family from another installed package (docs/examples/plugin_package, the plug-in guide's
example) through every CLI command.

The package declares its family in the entry-point group `keras_s2s.architectures` and nothing
in keras_s2s names it. pip installs it into a temporary directory (not the shared environment,
where other test runs would see the family appear), which is put on `sys.path`: its dist-info
makes it an installed distribution to `importlib.metadata`, as in a user's environment.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from keras_s2s import architectures
from keras_s2s.cli import main

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                       "examples", "plugin_package")
NAME = "plugin_gru"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """The directory the plug-in is installed in; on `sys.path` while this module's tests run."""
    source = tmp_path_factory.mktemp("plugin_source") / "plugin_package"
    shutil.copytree(PACKAGE, source)  # setuptools writes its build files beside the sources
    target = tmp_path_factory.mktemp("plugin_site")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True)
    if installed.returncode:
        pytest.skip(f"cannot install the plug-in package offline (pip, with this environment's "
                    f"setuptools and wheel): {installed.stderr.strip().splitlines()[-1:]}")
    sys.path.insert(0, str(target))
    try:
        yield str(target)
    finally:
        sys.path.remove(str(target))
        for module in [name for name in sys.modules if name.startswith("s2s_plugin_family")]:
            del sys.modules[module]


def test_the_entry_point_adds_the_family(plugin_path):
    assert NAME in architectures.names()
    assert architectures.get(NAME).model_class().__name__ == "ReversedSourceGRU"


@pytest.mark.slow
def test_train_translate_evaluate_export_tflite(plugin_path, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--arch", NAME, "--data", "reverse", "--out", run, "--epochs", "1",
                 "--num-pairs", "200", "--batch-size", "32", "--vocab-size", "60",
                 "--max-length", "6", "--model-arg", "units=24"]) == 0
    with open(os.path.join(run, "config.json"), encoding="utf-8") as file:
        config = json.load(file)
    assert config["arch"] == NAME and config["model"] == {"units": 24}
    capsys.readouterr()

    # A new process, as a user's next command: loading the run must import the plug-in's class.
    translated = subprocess.run(
        [sys.executable, "-m", "keras_s2s.cli", "translate", run, "a b c", "d e"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [plugin_path, os.environ.get("PYTHONPATH", "")])})
    assert translated.returncode == 0, translated.stderr
    assert len(translated.stdout.splitlines()) == 2

    assert main(["evaluate", run, "--data", "reverse", "--num-pairs", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 20

    # A family without attention is named as itself when a heat map is asked of it.
    assert main(["translate", run, "a b c", "--attention-plot", str(tmp_path / "a.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert f"its family, {NAME}, decodes without attention" in error
    assert len(error.splitlines()) == 1 and not (tmp_path / "a.png").exists()

    assert main(["export", run, "--model-name", "plugin", "--base-path",
                 str(tmp_path / "export"), "--beam", "2"]) == 0
    version_dir = capsys.readouterr().out.strip()
    assert version_dir == str(tmp_path / "export" / "plugin" / "1")

    out = str(tmp_path / "plugin.tflite")
    assert main(["tflite", version_dir, "--out", out, "--max-source-length", "8",
                 "--max-target-length", "8"]) == 0
    assert os.path.getsize(out) > 0
    assert os.path.exists(str(tmp_path / "plugin.target_vocab.txt"))
