"""The documentation runs: README.md's Python blocks execute, its `keras-s2s` command lines
parse, its corpus recipes are the benchmarks', and every `>>>` example in the package's
docstrings passes as a doctest. The figures README.md quotes are those of the results JSON
files they come from, and the repository describes the project as it is: no narrated history
in its files."""

import contextlib
import dataclasses
import doctest
import importlib
import io
import json
import os
import pkgutil
import re
import shlex
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

import keras_s2s
from keras_s2s import architectures
from keras_s2s.cli import build_parser
from keras_s2s.run import save_run
from keras_s2s.training.config import TrainConfig, from_arguments

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


def promised_output(block):
    """The lines a README block says it prints: each `print(...)` line ends with a comment
    holding exactly what it prints."""
    promised = []
    for line in block.splitlines():
        if line.lstrip().startswith("print("):
            code, marker, comment = line.partition("  # ")
            assert marker, f"README.md: a print without its output in a comment: {line!r}"
            promised.append(comment.strip())
    return promised


def run_readme_block(block):
    """Run a README block; assert it prints what it promises. Returns its namespace."""
    namespace, printed = {"__name__": "readme"}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, str(README), "exec"), namespace)
    assert printed.getvalue().splitlines() == promised_output(block), block
    return namespace


def test_readme_python_blocks_print_what_they_promise(tmp_path, monkeypatch):
    """Every Python block runs and prints what its comments say. The block that trains a
    Transformer runs first: its model, saved as `runs/dates`, is the run that the blocks
    loading `runs/dates` (made by README's first command) translate with."""
    blocks = code_blocks("python")
    training = [block for block in blocks if "model.fit(" in block]
    assert len(training) == 1, "README.md has one Python block that trains"
    trained = run_readme_block(training[0])
    config = TrainConfig(arch="transformer", data="dates", out=str(tmp_path / "runs" / "dates"),
                         vocab_size=400, max_source_length=32, max_target_length=16,
                         model={"num_layers": 2, "d_model": 64, "num_heads": 4, "d_ff": 256,
                                "dropout": 0.1, "max_length": 34})
    save_run(config.out, config, trained["model"], trained["source_tokenizer"],
             trained["target_tokenizer"])
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        if block is not training[0]:
            run_readme_block(block)


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

    readme = from_arguments(build_parser().parse_args(argv))
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
_HISTORY_WORDS = re.compile(r"iss[u]e [0-9]+|s[e]ssion|previous[ ]run", re.I)
#: TensorFlow's names that contain the word: the tf.compat.v1.Session API, TF Serving's protos.
_TENSORFLOW_SESSION_NAMES = re.compile("|".join([
    *map(re.escape, ("tf.compat.v1.Session", "Session.run", "BatchingSession", "SessionOptions",
                     "Session::Run")),
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


RESULTS = REPOSITORY / "docs" / "results"


def result(name, *keys):
    """A figure of `docs/results/<name>.json`, read when called: the value under `keys` (names
    of members, indices of lists)."""
    def read():
        value = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
        for key in keys:
            value = value[key]
        return value
    return read


def quality(name, run, beam, metric):
    """A BLEU or chrF figure of a `bench/quality.py` run (`beam` 1 is greedy search)."""
    return result(f"quality_{name}", "figures", "results", run, f"beam_{beam}", metric)


def kor_eng(name, metric, arch="transformer"):
    """A beam-4 figure of a kor-eng run of `docs/results/quality_kor-eng_<name>.json`."""
    return quality(f"kor-eng_{name}", f"kor-eng/{arch}", 4, metric)


def multi30k(name, metric, arch="transformer", beam=4):
    return quality(f"multi30k_{name}", f"multi30k/{arch}", beam, metric)


def mean(*figures):
    return lambda: sum(figure() for figure in figures) / len(figures)


def difference(figure, other):
    return lambda: figure() - other()


_M30K_SEEDS = ("transformer_word-dropout=0.1", "transformer_word-dropout=0.1_seed=1")
_M30K_RNNS = "bahdanau_luong_decay=linear_average-last=5_tokenizer=unigram_model.dropout=0.2"
_KOR_RNNS = "seq2seq_luong_word-dropout=0.1_decay=linear_average-last=5"
_KOR_SMOOTHING_01 = "word-dropout=0.1_decay=linear_average-last=5"  # and the Bahdanau run
_KOR_RECIPE = "label-smoothing=0.2"


def _transformer_m30k(metric, beam=4):
    return mean(*(multi30k(name, metric, beam=beam) for name in _M30K_SEEDS))


#: Each figure README.md quotes, and where it comes from: README's words with "{}" for each
#: number (whitespace-insensitive), and for each number its source. A number must equal its
#: source rounded to the decimals README gives it.
README_FIGURES = [
    ("with beam search it pays even when it compiles: {} s, and {} s with the programs kept, "
     "against {} s", [result("xla_end_to_end", "figures", "beam4", *keys) for keys in (
         ["xla_cold_cache_seconds"], ["xla_warm_cache_seconds"], ["graph_seconds", 0])]),
    ("greedy search loses while it compiles, {} s against {} s, and ties once the programs are "
     "kept, {} s", [result("xla_end_to_end", "figures", "greedy", *keys) for keys in (
         ["xla_cold_cache_seconds"], ["graph_seconds", 0], ["xla_warm_cache_seconds"])]),
    ("where an earlier form of this recipe scored {} BLEU",
     [result("quality_kor-eng", "figures", "results", "kor-eng/transformer", "bleu")]),
    ("it gives {} BLEU / {} chrF with `--beam 4` on that split",
     [kor_eng(_KOR_RECIPE, "bleu"), kor_eng(_KOR_RECIPE, "chrf")]),
    ("moved it by up to {} BLEU and {} chrF ({}–{} BLEU, {}–{} chrF, measured with label "
     "smoothing 0.1)", [
         difference(kor_eng(_KOR_SMOOTHING_01, "bleu"), kor_eng("seed=1", "bleu")),
         difference(kor_eng("seed=1", "chrf"), kor_eng("vocab-size=6000", "chrf")),
         kor_eng("seed=1", "bleu"), kor_eng(_KOR_SMOOTHING_01, "bleu"),
         kor_eng("vocab-size=6000", "chrf"), kor_eng("seed=1", "chrf")]),
    ("**{} BLEU** with `--beam 4` on the official `val.tsv`, the mean of two seeds ({} and {}), "
     "and {} greedy", [_transformer_m30k("bleu"), *(multi30k(name, "bleu") for name in _M30K_SEEDS),
                       _transformer_m30k("bleu", beam=1)]),
    ("reached {} BLEU with its greedy search, and ours {} with the same search ({} with beam 4)", [
        result("quality_multi30k_transformer_keras-io-recipe", "figures", "results",
               "multi30k/keras-io-recipe", "greedy_uncached", "bleu"),
        multi30k("transformer_keras-io-recipe", "bleu", beam=1),
        multi30k("transformer_keras-io-recipe", "bleu")]),
    ("| transformer | **{}** / {} | **{}** / {} |", [
        _transformer_m30k("bleu"), _transformer_m30k("chrf"),
        kor_eng(_KOR_RECIPE, "bleu"), kor_eng(_KOR_RECIPE, "chrf")]),
    *((f"| {name} | {{}} / {{}} | {{}} / {{}} |", [
        multi30k(multi30k_run, "bleu", arch), multi30k(multi30k_run, "chrf", arch),
        kor_eng(kor_eng_run, "bleu", arch), kor_eng(kor_eng_run, "chrf", arch)])
      for name, arch, multi30k_run, kor_eng_run in (
          ("luong", "luong", _M30K_RNNS, _KOR_RNNS),
          ("bahdanau", "bahdanau", _M30K_RNNS, _KOR_SMOOTHING_01),
          ("seq2seq (no attention)", "seq2seq", "seq2seq", _KOR_RNNS))),
    ("On kor-eng in 15 minutes it cost {} BLEU", [
        difference(kor_eng(_KOR_SMOOTHING_01, "bleu"), kor_eng("both-directions=true", "bleu"))]),
    ("float32 scores {} BLEU against our {}, and int8 {}", [
        result("ctranslate2_quality_multi30k", "figures", decoder, "bleu")
        for decoder in ("ctranslate2_float32", "ours", "ctranslate2_int8")]),
    ("at `--batch-size 32` on a CPU peaks at {} GiB of memory",
     [result("marian", "figures", "fine_tune_peak_rss_gib")]),
]
_NUMBER = r"(-?\d[\d,]*(?:\.\d+)?)"


@pytest.mark.parametrize("words, sources", README_FIGURES, ids=[w for w, _ in README_FIGURES])
def test_readme_quotes_the_figures_of_the_results_files(words, sources):
    readme = re.sub(r"\s+", " ", README.read_text(encoding="utf-8"))
    pattern = _NUMBER.join(re.escape(part) for part in words.split("{}"))
    match = re.search(pattern, readme)
    assert match, f"README.md no longer says {words!r}: update README_FIGURES with it"
    for quoted, source in zip(match.groups(), sources, strict=True):
        decimals = len(quoted.partition(".")[2])
        figure = round(source(), decimals)
        assert float(quoted.replace(",", "")) == figure, (
            f"README.md quotes {quoted} in {words!r}; its results file says {figure}")


def _slug(heading):
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_results_page_links_what_exists():
    """Every results file README.md and docs/RESULTS.md name exists, and the results page's
    links to its own sections lead to a heading."""
    page = (REPOSITORY / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    named = {f"docs/{path}" for path in re.findall(r"(?<![\w/])results/[\w.=,/-]+", page)}
    named |= set(re.findall(r"docs/results/[\w.=,/-]+", page + README.read_text("utf-8")))
    named |= {f"docs/results/{name}" for name in re.findall(r"`(quality_[^`*<]+\.json)`", page)}
    missing = sorted(path for path in named  # a stem ending in "_" is a pattern's (quality_*)
                     if not path.endswith("_") and not (REPOSITORY / path).exists())
    assert not missing, f"results files named but absent: {missing}"
    anchors = {_slug(heading) for heading in re.findall(r"^#+ (.*)$", page, re.M)}
    broken = [link for link in re.findall(r"\]\(#([^)]+)\)", page) if link not in anchors]
    assert not broken, f"links to no heading of docs/RESULTS.md: {broken}"


def test_the_site_builds_strictly(tmp_path):
    """`mkdocs build --strict` (mkdocs.yml): every API page renders from the docstrings, every
    cross-reference and link resolves, and the command-line page lists every subcommand."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason='the site needs the docs extra: '
                                           'pip install -e ".[docs]"')
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPOSITORY, capture_output=True, text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-3000:]
    cli_page = (tmp_path / "cli" / "index.html").read_text(encoding="utf-8")
    for name in build_parser()._subparsers._group_actions[0].choices:
        assert f'id="keras-s2s-{name}"' in cli_page, f"the CLI page lacks keras-s2s {name}"
