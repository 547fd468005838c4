"""Each concept is spelled in one module: family names in the registry, run files in keras_s2s.run.

The checks read the code's syntax trees (docstrings and comments may name anything), so they
fail as soon as someone compares an architecture name or spells a run file elsewhere.
"""

import ast
import pathlib

import pytest

from keras_s2s import architectures

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The code checked; keras_s2s/serving/ reads exported SavedModels, not run directories.
SOURCES = sorted(path for folder in ("keras_s2s", "bench") for path in (ROOT / folder).rglob("*.py")
                 if "serving" not in path.relative_to(ROOT).parts[1:2])

#: Run-file names, and the modules allowed to spell them.
RUN_FILES = ("config.json", "model.keras", "history.json", "training_curves", "best.weights",
             "_vocab.txt", "_tokenizer.json")
RUN_FILE_OWNERS = {"keras_s2s/run.py", "keras_s2s/data/tokenizers.py",
                   # reads Hugging Face checkpoints, whose settings are also `config.json`
                   "keras_s2s/importers/marian.py"}


def _code_strings(tree):
    """The string constants of `tree` that are not docstrings (f-string parts included)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def _name_comparisons(tree):
    """Comparisons (`==`, `!=`, `in`, ...) with a family's name."""
    families = set(architectures.names())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        constants = {part.value for side in (node.left, *node.comparators)
                     for part in ast.walk(side) if isinstance(part, ast.Constant)}
        if constants & families:
            yield node


def _parse(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_architecture_name_comparison(path):
    found = [f"line {node.lineno}: {ast.unparse(node)}" for node in _name_comparisons(_parse(path))]
    assert not found, f"compare no family names outside keras_s2s.architectures: {found}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_guessed_model_attribute(path):
    found = [node.lineno for node in ast.walk(_parse(path)) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
             and any(isinstance(arg, ast.Constant) and arg.value == "max_length"
                     for arg in node.args)]
    assert not found, f"lines {found}: ask the model contract (`max_decode_length`) instead"


@pytest.mark.parametrize("path", [path for path in SOURCES if str(path.relative_to(ROOT))
                                  not in RUN_FILE_OWNERS],
                         ids=lambda path: str(path.relative_to(ROOT)))
def test_no_run_file_name_outside_run_dir(path):
    found = [f"line {node.lineno}: {node.value!r}" for node in _code_strings(_parse(path))
             if any(name in node.value for name in RUN_FILES)]
    assert not found, f"name run files through keras_s2s.run: {found}"


def test_the_checks_find_what_they_guard():
    tree = ast.parse('"""A docstring naming model.keras."""\n'
                     'if arch in ("luong", "x") or kind != "transformer": pass\n'
                     'open(f"{d}/model.keras")\n')
    assert len(list(_name_comparisons(tree))) == 2
    assert [node.value for node in _code_strings(tree) if "." in node.value] == ["/model.keras"]
