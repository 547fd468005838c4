"""The documentation runs: README.md's Python blocks execute, its `keras-s2s` command lines
parse, its corpus recipes are the benchmarks', and every `>>>` example in the package's
docstrings passes as a doctest. And the repository describes the project as it is: no
narrated history in its files."""

import dataclasses
import doctest
import importlib
import io
import pkgutil
import re
import shlex
import subprocess
import tokenize
from pathlib import Path

import pytest

import keras_s2s
from keras_s2s import architectures
from keras_s2s.cli import build_parser, train_config

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def command_lines():
    """Every `keras-s2s ...` command of the README's bash blocks (continuations joined)."""
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for command in re.split(r"&&|;|\|", line.split(" #")[0]):
                words = shlex.split(command.strip().rstrip("&"))
                if words[:1] == ["keras-s2s"]:
                    yield words[1:]


def test_readme_python_blocks_run():
    blocks = code_blocks("python")
    assert blocks, "README.md has Python blocks"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("argv", list(command_lines()), ids=" ".join)
def test_readme_commands_parse(argv):
    args = build_parser().parse_args(argv)
    assert args.handler


def corpus_recipes():
    """README's `keras-s2s train` commands on a corpus of ../shared/data."""
    return [argv for argv in command_lines() if argv[0] == "train"
            and "../shared/data/" in argv[argv.index("--data") + 1]]


@pytest.mark.parametrize("argv", corpus_recipes(), ids=" ".join)
def test_readme_recipes_are_what_the_quality_benchmark_trains(argv, monkeypatch):
    """A recipe in README.md trains what `bench/quality.py` measured for its figures
    (`bench/corpora.py`'s `corpus_config`): same settings, same model once the family's
    presets are filled in."""
    monkeypatch.syspath_prepend(str(README.parent / "bench"))
    from corpora import corpus_config

    readme = train_config(build_parser().parse_args(argv))
    task = Path(readme.data).parent.name
    bench = corpus_config(task, readme.arch, readme.out, readme.time_budget_minutes)

    def settings(config):
        fields = dataclasses.asdict(config)
        fields["model"] = {**architectures.get(config.arch).presets, **config.model}
        fields["data"] = Path(config.data).parts[-2:]
        return fields

    assert settings(readme) == settings(bench)


def modules():
    return [info.name for info in pkgutil.walk_packages(keras_s2s.__path__, "keras_s2s.")]


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs={}):  # examples import what they use
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing examples in {name}"


def _public_classes():
    """Every public layer and model but the contract (documented in keras_s2s.models.base)."""
    from keras_s2s import layers, models

    return [getattr(module, name) for module in (layers, models) for name in module.__all__
            if name != "Seq2SeqModel"]


@pytest.mark.parametrize("cls", _public_classes(), ids=lambda cls: cls.__name__)
def test_public_layers_and_models_are_documented_to_keras_hub_standard(cls):
    """Args, shapes or returns, a runnable example and linked references, in every public
    layer and model docstring (the examples run in `test_docstring_examples`)."""
    doc = cls.__doc__ or ""
    missing = [section for section, present in (
        ("Args:", "Args:" in doc),
        ("shapes/Returns", any(word in doc for word in ("Shapes", "Returns", "Inputs", "Call"))),
        ("Example", ">>>" in doc),
        ("Reference with a link", "Reference" in doc and "https://" in doc),
        ("defaults", "default" in doc),
    ) if not present]
    assert not missing, f"{cls.__name__}'s docstring lacks {missing}"


#: Words that narrate how the project came about rather than describe it (bracketed letters
#: keep this file from matching itself).
_HISTORY_WORDS = re.compile(r"iss[u]e [0-9]+|s[e]ssion|t[i]cket|previous[ ]run", re.I)
#: TensorFlow's names that contain the word: the tf.compat.v1.Session API, TF Serving's protos.
_TENSORFLOW_SESSION_NAMES = re.compile("|".join([
    *map(re.escape, ("tf.compat.v1.Session", "Session.run", "BatchingSession", "SessionOptions")),
    r"session_bundle\w*"]))
_PROSE_TOKENS = {tokenize.COMMENT, tokenize.STRING} | (
    {tokenize.FSTRING_MIDDLE} if hasattr(tokenize, "FSTRING_MIDDLE") else set())


def _tracked_text_files():
    """(path, text) of every file `git ls-files` lists that is UTF-8 text."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, check=True,
                                 capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in filter(None, listing.split("\0")):
        try:
            yield REPOSITORY / name, (REPOSITORY / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):  # images, and files deleted but not yet staged
            continue


def _prose_lines(path, text):
    """(line number, line) of what a reader reads: all of a text file; the comments and string
    literals of a Python file. Names in code (a variable holding a tf.compat.v1.Session) are
    not prose, nor is the value of a `scope=` keyword (pytest's fixture scopes)."""
    if path.suffix != ".py":
        yield from enumerate(text.splitlines(), 1)
        return
    previous = [None, None]
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in _PROSE_TOKENS and previous != ["scope", "="]:
            for offset, line in enumerate(token.string.splitlines()):
                yield token.start[0] + offset, line
        if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            previous = [previous[1], token.string]


def test_the_repository_describes_the_project_without_narrating_its_history():
    hits = [f"{path.relative_to(REPOSITORY)}:{number}: {line.strip()}"
            for path, text in _tracked_text_files()
            for number, line in _prose_lines(path, text)
            if _HISTORY_WORDS.search(_TENSORFLOW_SESSION_NAMES.sub("", line))]
    assert not hits, ("say what the code does, not how it came about (git keeps the history):\n"
                      + "\n".join(hits))
