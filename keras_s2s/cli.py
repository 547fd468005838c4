"""The `keras-s2s` command: train, average, translate, evaluate, export, tflite (and serve,
explore).

Errors a user can cause (missing run directory, unknown architecture, bad data) end with a
one-line message and exit status 2, without a traceback.
"""

import argparse
import importlib
import json
import logging
import os
import sys

from keras_s2s.exporters import CTRANSLATE2_QUANTIZATIONS, TFLITE_QUANTIZATIONS

logger = logging.getLogger("keras_s2s")

USER_ERRORS = (ValueError, OSError, UnicodeDecodeError)


def _number(kind, check, expected):
    """An argparse type: `kind(text)`, which must pass `check`, else "expected, got text"."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int = _number(int, lambda value: value > 0, "a positive integer")
port_number = _number(int, lambda value: 0 <= value <= 65535, "a port number in [0, 65535]")



def _add_train_parser(subparsers):
    from keras_s2s.training.config import add_arguments

    parser = subparsers.add_parser(
        "train", help="train a model into a run directory",
        description="Train a model on a built-in task (dates, reverse, copy) or a TSV file of "
                    "source<TAB>target pairs. An interrupted run resumes when restarted with "
                    "the same --out.")
    add_arguments(parser)
    parser.set_defaults(handler=_train)


def _train(args):
    from keras_s2s.training.loop import train

    from keras_s2s.training.config import from_arguments, given_options, inherit

    # with --init-from, that run's architecture
    config = inherit(from_arguments(args), given_options(args))
    history = train(config, verbose=2 if not sys.stdout.isatty() else "auto")
    best = min(history.get("val_loss", [float("nan")]))
    accuracy = max(history.get("val_masked_accuracy", [float("nan")]))
    where = f"into {args.out}"
    if args.distribute == "multi-worker":
        from keras_s2s.training.multi_worker import Cluster

        cluster = Cluster.from_environment()
        where = (f"as worker {cluster.rank} of {cluster.num_workers}, "
                 + (where if cluster.is_chief else f"the chief writing {args.out}"))
    print(f"trained {config.arch} on {args.data} {where}: best val_loss {best:.4f}, "
          f"val token accuracy {accuracy:.4f}")


def _add_average_parser(subparsers):
    parser = subparsers.add_parser(
        "average", help="average a run's last epochs' weights into its model",
        description="Replace RUN_DIR's model by the mean of the weights of its N epochs that "
                    "end at its best one (the run must have kept them: train with "
                    "--average-last M, M + patience >= N); prints the validation loss of the "
                    "mean beside the best epoch's.")
    parser.add_argument("run_dir")
    parser.add_argument("--last", type=positive_int, required=True, metavar="N")
    parser.set_defaults(handler=_average)


def _average(args):
    from keras_s2s.training.loop import average

    report = average(args.run_dir, args.last)
    print(f"averaged epochs {report['epochs'][0]}-{report['epochs'][-1]} of {args.run_dir}: "
          f"val_loss {report['val_loss']:.4f} (best epoch {report['best_epoch']} alone: "
          f"{report['best_epoch_val_loss']:.4f})")


def _add_translate_parser(subparsers):
    parser = subparsers.add_parser(
        "translate", help="translate text with a trained run",
        description="Translate TEXT arguments, or standard input line by line when none are "
                    "given; prints one translation per line (an empty or blank input gives "
                    "an empty line), or N lines per input, best first, with --n-best N. "
                    "--scores puts the score and a tab before each line.")
    parser.add_argument("run_dir", nargs="?",
                        help="trained run directory, or a CTranslate2 export (omit with "
                             "--server)")
    parser.add_argument("text", nargs="*")
    parser.add_argument("--server", metavar="URL",
                        help="translate through a TF Serving REST or gRPC endpoint instead, "
                             "e.g. http://127.0.0.1:8501 or grpc://127.0.0.1:8500/MODEL "
                             "(decoding flags choose a keras-s2s export's beam, sample or "
                             "constrained signature)")
    parser.add_argument("--model", help="model name on the server (with --server)")
    _add_decoding_arguments(parser)
    parser.add_argument("--prefix", metavar="TEXT",
                        help="every translation starts with TEXT and goes on from there")
    parser.add_argument("--constraint", action="append", metavar="PHRASE",
                        help="every translation contains PHRASE (repeatable; needs --beam)")
    parser.add_argument("--attention-plot", metavar="OUT.png",
                        help="write the attention heat map of the first input")
    parser.add_argument("--scores", action="store_true", help="print the score before each line")
    parser.add_argument("--alignments", action="store_true",
                        help="print after a tab the word alignment of each line in the Pharaoh "
                             "format, source-target word indices: 0-0 1-2 ...")
    parser.add_argument("--replace-unknowns", action="store_true",
                        help="replace each unknown output word by the source word it attends "
                             "to most")
    _add_xla_argument(parser)
    parser.set_defaults(handler=_translate)


#: The decoding flags (`_add_decoding_arguments`) and their `args` names.
DECODING_FLAGS = {"--beam": "beam", "--alpha": "alpha", "--n-best": "n_best",
                  "--temperature": "temperature", "--top-k": "top_k", "--top-p": "top_p",
                  "--seed": "seed"}


def _add_decoding_arguments(parser):
    """The flags `_strategy` turns into a decoding strategy; all default to None (not given)."""
    group = parser.add_argument_group("decoding (default: greedy search)")
    group.add_argument("--beam", type=int, metavar="WIDTH", help="beam search of this width")
    group.add_argument("--alpha", type=float,
                       help="beam search: GNMT length penalty exponent (default 0.6)")
    group.add_argument("--n-best", type=int, metavar="N",
                       help="beam search: the N best hypotheses (N <= WIDTH)")
    group.add_argument("--temperature", type=float,
                       help="sample at this softmax temperature (0: greedy search)")
    group.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    group.add_argument("--top-p", type=float,
                       help="sample among the most likely tokens holding probability p")
    group.add_argument("--seed", type=int, help="seed of the sampling: repeatable outputs")


def _strategy(args, run=None):
    """The `keras_s2s.decoding` strategy of the decoding flags; beam search's α is `--alpha`,
    else the one `tune-alpha` stored in `run`, else Beam's."""
    from keras_s2s.decoding import strategy_from_options

    options = {name: getattr(args, name) for name in DECODING_FLAGS.values()}
    return strategy_from_options(**options, default_alpha=run and run.tuned_alpha)


def _add_xla_argument(parser):
    parser.add_argument("--xla", choices=["on", "off"], default="off",
                        help="compile decoding with XLA: one compilation per input shape, "
                             "kept between commands in $KERAS_S2S_XLA_CACHE (default "
                             "~/.cache/keras-s2s/xla); faster steps, so it pays once compiled")


def _translate(args):
    if args.server:
        return _translate_remotely(args)
    from keras_s2s.inference.alignment import pharaoh
    from keras_s2s.inference.translator import translator_for
    from keras_s2s.run import Run

    if args.run_dir is None:
        raise ValueError("give a run directory, or --server URL --model NAME")
    run = Run.open(args.run_dir)
    strategy = _strategy(args, run)
    texts = _texts_to_translate(args.text)
    translator = translator_for(run, jit_compile=args.xla == "on")
    guides = {}
    if args.prefix is not None:
        guides["prefixes"] = [args.prefix] * len(texts)
    if args.constraint:
        guides["constraints"] = [args.constraint] * len(texts)
    if guides and run.is_ctranslate2:
        raise ValueError(f"--prefix and --constraint need keras-s2s's own decoding; "
                         f"{args.run_dir} is a CTranslate2 export")
    attention_flags = [flag for flag, given in (
        ("--alignments", args.alignments), ("--replace-unknowns", args.replace_unknowns)) if given]
    if attention_flags and not translator.has_attention:
        raise ValueError(f"{' and '.join(attention_flags)} need attention, and the model in "
                         f"{args.run_dir} has none (its family is {run.config.arch})")
    translations = translator.translate(texts, strategy=strategy, attention=bool(
        args.attention_plot or attention_flags), **guides)
    for translation in translations:
        for hypothesis in [translation, *translation.alternatives]:
            line = (translator.replace_unknowns(hypothesis) if args.replace_unknowns
                    else hypothesis.text)
            if args.scores:
                line = f"{hypothesis.score:.4f}\t{line}"
            if args.alignments:
                line += "\t" + pharaoh(hypothesis.alignments)
            print(line)
    if args.attention_plot:
        first = translations[0]
        if first.attention is None:
            raise ValueError(f"the model in {args.run_dir} has no attention to plot (its family, "
                             f"{run.config.arch}, decodes without attention)")
        from keras_s2s.plotting import plot_attention

        plot_attention(first.attention, first.source_tokens, first.output_tokens,
                       args.attention_plot, title=first.source)
        print(f"attention plot written to {args.attention_plot}", file=sys.stderr)


def _texts_to_translate(arguments):
    texts = arguments or [line.rstrip("\n") for line in sys.stdin]
    if not texts:
        raise ValueError("nothing to translate: give TEXT arguments or lines on standard input")
    return texts


def _translate_remotely(args):
    """Send the texts to a TF Serving (or `keras-s2s serve`) model: to a keras-s2s export's
    `beam`, `sample` or `constrained` signature when decoding flags are given, else to
    serving_default."""
    ignored = [flag for flag, given in (
        ("--attention-plot", args.attention_plot), ("--alignments", args.alignments),
        ("--replace-unknowns", args.replace_unknowns), ("--xla on", args.xla == "on")) if given]
    if ignored:
        raise ValueError(f"--server cannot honour {', '.join(ignored)}: the server's export "
                         f"decodes, without attention")
    from keras_s2s.serving import Client, ServingRequestError

    server, model = _server_and_model(args.server, args.model)
    texts = _texts_to_translate(([args.run_dir] if args.run_dir else []) + args.text)
    signature_name, settings = _server_signature(args, len(texts))
    try:
        results = Client(server, model).translate(texts, signature_name, **settings)
    except ServingRequestError as error:
        raise ValueError(f"{args.server}: {error}") from error
    for result in results:
        if isinstance(result, dict):
            for hypothesis in [result, *result.get("alternatives", [])]:
                text = hypothesis["translation"]
                print(f"{hypothesis['score']:.4f}\t{text}" if args.scores else text)
        else:
            print(result)


def _server_and_model(url, model):
    """The server URL and model name of `--server URL [--model NAME]`: a grpc:// URL may name the
    model as its path (grpc://HOST:PORT/MODEL)."""
    scheme, _, rest = url.partition("://")
    target, _, path = rest.partition("/")
    if scheme == "grpc" and path.strip("/"):
        if model and model != path.strip("/"):
            raise ValueError(f"--server {url} names model {path.strip('/')!r}, --model {model!r}")
        return f"grpc://{target}", path.strip("/")
    if not model:
        raise ValueError("--server needs --model NAME (or a grpc://HOST:PORT/MODEL URL)")
    return url, model


def _server_signature(args, count):
    """The signature of a keras-s2s export and its settings that the decoding flags, and
    `--prefix`/`--constraint` for `count` texts, ask for, with the local command's defaults
    and checks: `beam`, `constrained` or `sample`, else (no flag) None, serving_default, for
    which no TensorFlow is started."""
    guided = args.prefix is not None or bool(args.constraint)
    if not guided and all(getattr(args, name) is None for name in DECODING_FLAGS.values()):
        return None, {}
    if not args.verbose:
        _start_tensorflow_quietly()
    from keras_s2s.decoding import Beam

    strategy = _strategy(args)  # flags given: a Beam, a Sample or (guides alone) Greedy
    if guided and not isinstance(strategy, Beam):
        raise ValueError("--prefix and --constraint through --server need --beam WIDTH (the "
                         "export's constrained signature is a beam search)")
    if isinstance(strategy, Beam):
        settings = {"beam_width": strategy.width, "alpha": strategy.alpha,
                    "n_best": strategy.n_best}
        if not guided:
            return "beam", settings
        return "constrained", {**settings, "prefixes": [args.prefix or ""] * count,
                               "constraints": [args.constraint or [""]] * count}
    # A Sample's None is every token, no nucleus cut, fresh draws.
    return "sample", {"temperature": strategy.temperature, "top_k": strategy.top_k or 0,
                      "top_p": strategy.top_p or 1.0,
                      "seed": -1 if strategy.seed is None else strategy.seed}


def _add_serve_parser(subparsers):
    from keras_s2s.serving.config import add_arguments

    parser = subparsers.add_parser(
        "serve", help="serve SavedModels over TensorFlow Serving's REST and gRPC APIs",
        description="TensorFlow Serving's REST API (predict, classify, regress, status, "
                    "metadata) and gRPC API (Predict, GetModelMetadata, GetModelStatus) "
                    "for exported SavedModels, with tensorflow_model_server's flag "
                    "names, for machines without TF Serving.")
    add_arguments(parser)
    parser.set_defaults(handler=_serve)


#: What each optional part of the command needs beyond `pip install keras-s2s`, by extra.
EXTRA_MODULES = {
    "serve": ("aiohttp", "orjson", "prometheus_client"),
    "explore": ("aiohttp",),
}


def _require_extra(extra):
    """A one-line error naming the pip extra to install when a module it brings is missing."""
    for module in EXTRA_MODULES[extra]:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(f"this needs the {extra} extra: pip install 'keras-s2s[{extra}]' "
                             f"({error})") from None


def _serve(args):
    _require_extra("serve")
    from keras_s2s.serving.errors import ServingError
    from keras_s2s.serving.server import run

    try:
        run(args)
    except ServingError as error:
        raise ValueError(str(error)) from error


def _add_explore_parser(subparsers):
    parser = subparsers.add_parser(
        "explore", help="a local web page comparing runs' translations and attention",
        description="Serve a page where every RUN_DIR translates the sentence typed, side by "
                    "side, with score, time, an interactive cross-attention heat map (layer "
                    "and head for Transformers), beam search's n-best list and sampling. "
                    "Share an example as URL/?text=...")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="trained run directory")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=port_number, default=8080,
                        help="port (default 8080; 0: any free one)")
    parser.set_defaults(handler=_explore)


def _explore(args):
    _require_extra("explore")
    from keras_s2s.explore.server import run

    run(args.run_dirs, host=args.host, port=args.port)


def _add_tune_alpha_parser(subparsers):
    from keras_s2s.inference.evaluation import DEFAULT_ALPHAS

    parser = subparsers.add_parser(
        "tune-alpha", help="choose beam search's length penalty on the validation split",
        description="Decode the run's validation split with beam search for each length "
                    "penalty alpha, keep the one with the best BLEU in RUN_DIR/decoding.json: "
                    "translate, evaluate and export then use it when --beam is given without "
                    "--alpha.")
    parser.add_argument("run_dir")
    parser.add_argument("--beam", type=positive_int, default=4, metavar="WIDTH")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS))
    parser.add_argument("--max-pairs", type=positive_int, default=500,
                        help="validation pairs decoded for each alpha")
    parser.set_defaults(handler=_tune_alpha)


def _tune_alpha(args):
    from keras_s2s.inference.evaluation import tune_alpha

    report = tune_alpha(args.run_dir, args.beam, args.alphas, args.max_pairs)
    for alpha, bleu in report["bleu_by_alpha"].items():
        print(f"alpha {float(alpha):.2f}\tBLEU {bleu:.2f}")
    print(f"alpha {report['alpha']:.2f} (beam {report['width']}, {report['pairs']} validation "
          f"pairs) stored in {args.run_dir}/decoding.json")


def _add_evaluate_parser(subparsers):
    parser = subparsers.add_parser(
        "evaluate", help="score a trained run on a TSV file",
        description="Translate the sources of a TSV file and report sacreBLEU BLEU and chrF, "
                    "exact match and BLEU by source length.")
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True,
                        help="TSV path, or a built-in task name to score fresh examples")
    parser.add_argument("--source-column", type=int, default=0)
    parser.add_argument("--target-column", type=int, default=1)
    parser.add_argument("--num-pairs", type=int, default=1000, help="built-in tasks only")
    _add_decoding_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_xla_argument(parser)
    parser.set_defaults(handler=_evaluate)


def _evaluate(args):
    from keras_s2s.data import synthetic
    from keras_s2s.data.tsv import read_tsv
    from keras_s2s.inference.evaluation import evaluation_report
    from keras_s2s.inference.translator import translator_for
    from keras_s2s.run import Run

    run = Run.open(args.run_dir)
    strategy = _strategy(args, run)
    if strategy.n_best > 1:
        raise ValueError("evaluate scores the best hypothesis: leave out --n-best")
    if args.data in synthetic.TASKS:
        pairs = synthetic.generate(args.data, args.num_pairs, seed=12345)
    else:
        pairs = read_tsv(args.data, source_column=args.source_column,
                         target_column=args.target_column)
    sources = [source for source, _ in pairs]
    references = [target for _, target in pairs]
    translations = translator_for(run, jit_compile=args.xla == "on").translate(
        sources, strategy=strategy, attention=False)
    report = evaluation_report(sources, [t.text for t in translations], references)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for name in ("bleu", "chrf", "exact_match", "count"):
            if name in report:
                print(f"{name}: {report[name]}")


def _add_export_parser(subparsers):
    parser = subparsers.add_parser(
        "export", help="export a trained run as a SavedModel for TF Serving, or to CTranslate2",
        description="Write BASE_PATH/NAME/<version>/, a SavedModel translating strings "
                    "(serving_default) and token ids (translate_ids), tokenizer and decoding "
                    "inside; an existing version is never overwritten. With --format "
                    "ctranslate2, write --out DIR instead: a CTranslate2 model (Transformers "
                    "only) and the tokenizers, which translate and evaluate read.")
    parser.add_argument("run_dir")
    parser.add_argument("--format", choices=["savedmodel", "ctranslate2"], default="savedmodel")
    parser.add_argument("--model-name", help="savedmodel: the model's name on the server")
    parser.add_argument("--base-path", default="export",
                        help="savedmodel: directory of the served models (default: export)")
    parser.add_argument("--version", type=int,
                        help="savedmodel: version number (default: the next free one, 1 for "
                             "the first)")
    parser.add_argument("--out", metavar="DIR", help="ctranslate2: the directory to create")
    parser.add_argument("--quantize", choices=CTRANSLATE2_QUANTIZATIONS, default="none",
                        help="ctranslate2: weight type (none: float32)")
    parser.add_argument("--xla", dest="xla_export", choices=["on", "off"], default="off",
                        help="savedmodel: decoding compiled with XLA per bucket of batch size "
                             "and source length, compiled at load by the warm-up; faster, "
                             "served with --xla_cpu_compilation_enabled only "
                             "(serving/README.md)")
    _add_decoding_arguments(parser)
    parser.set_defaults(handler=_export)


def _export(args):
    if args.format == "ctranslate2":
        return _export_ctranslate2(args)
    from keras_s2s.exporters.savedmodel import export_run

    if args.out or args.quantize != "none":
        raise ValueError("--out and --quantize apply to --format ctranslate2 (a SavedModel "
                         "goes to --base-path; `keras-s2s tflite` quantizes)")
    if not args.model_name:
        raise ValueError("export needs --model-name NAME (or --format ctranslate2 --out DIR)")
    from keras_s2s.run import Run

    run = Run.open(args.run_dir)
    print(export_run(run, args.model_name, base_path=args.base_path, version=args.version,
                     strategy=_strategy(args, run), xla=args.xla_export == "on"))


def _export_ctranslate2(args):
    misplaced = [flag for flag, name in [*DECODING_FLAGS.items(), ("--model-name", "model_name"),
                                        ("--version", "version")]
                 if getattr(args, name) is not None] + ["--xla on"] * (args.xla_export == "on")
    if misplaced:
        raise ValueError(f"--format ctranslate2 does not take {', '.join(misplaced)}: the "
                         f"decoding is chosen when translating")
    if not args.out:
        raise ValueError("--format ctranslate2 needs --out DIR")
    from keras_s2s.exporters.ctranslate2 import export_ctranslate2

    print(export_ctranslate2(args.run_dir, args.out, quantize=args.quantize))


def _add_tflite_parser(subparsers):
    parser = subparsers.add_parser(
        "tflite", help="convert a run or an export to TensorFlow Lite",
        description="Write a builtin-ops-only .tflite model (token ids and a target prefix in, "
                    "token ids out by greedy or beam search, fixed lengths) and its "
                    "vocabularies beside it.")
    parser.add_argument("path", help="run directory or export version directory")
    parser.add_argument("--out", required=True, metavar="MODEL.tflite")
    parser.add_argument("--quantize", choices=TFLITE_QUANTIZATIONS, default="none",
                        help="weights: float32, int8 (dynamic range) or float16")
    parser.add_argument("--max-source-length", type=positive_int,
                        help="fixed source length, END included (default: the run's)")
    parser.add_argument("--max-target-length", type=positive_int,
                        help="fixed output length (default: the run's)")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="fixed batch size")
    _add_decoding_arguments(parser)
    parser.set_defaults(handler=_tflite)


def _tflite(args):
    from keras_s2s.exporters.tflite import convert
    from keras_s2s.run import Run

    # Beam search's alpha defaults to the run's tuned one; without --beam the run opens later.
    run = Run.open(args.path) if args.beam is not None else None
    size = convert(run or args.path, args.out, quantize=args.quantize,
                   max_source_length=args.max_source_length,
                   max_target_length=args.max_target_length, batch_size=args.batch_size,
                   strategy=_strategy(args, run))
    print(f"wrote {args.out} ({args.quantize}, {size} bytes)")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the usage of `train` is a screenful)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_import_parser(subparsers):
    parser = subparsers.add_parser(
        "import", help="import a pretrained OPUS-MT (Marian) checkpoint as a run",
        description="Write a run directory (as `train` leaves it, for translate, evaluate, "
                    "export, tflite and serve) from a Marian checkpoint: a local directory in "
                    "Hugging Face's layout (model.safetensors or tf_model.h5, source.spm, "
                    "target.spm, vocab.json) or Marian's own (decoder.yml, the model .npz, its "
                    "vocabulary .yml, the .spm files), or a hub name such as "
                    "Helsinki-NLP/opus-mt-ko-en, downloaded with huggingface_hub.")
    parser.add_argument("source", help="checkpoint directory or Hugging Face Hub name")
    parser.add_argument("--out", required=True, help="the run directory to create")
    parser.add_argument("--max-length", type=int,
                        help="the run's longest source and output in tokens (default 256, or "
                             "the checkpoint's max_position_embeddings when smaller)")
    parser.set_defaults(handler=_import)


def _import(args):
    from keras_s2s.importers.marian import import_marian

    import_marian(args.source, args.out, max_length=args.max_length)
    print(f"imported {args.source} into {args.out}")


def build_parser():
    parser = _Parser(
        prog="keras-s2s",
        description="Sequence-to-sequence models: RNN encoder-decoder, Bahdanau/Luong "
                    "attention and the Transformer.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(subparsers)
    _add_average_parser(subparsers)
    _add_translate_parser(subparsers)
    _add_tune_alpha_parser(subparsers)
    _add_evaluate_parser(subparsers)
    _add_serve_parser(subparsers)
    _add_explore_parser(subparsers)
    _add_export_parser(subparsers)
    _add_tflite_parser(subparsers)
    _add_import_parser(subparsers)
    return parser


def _start_tensorflow_quietly():
    """Import TensorFlow and probe its devices with the process's stderr closed.

    Its C++ start-up logs (oneDNN, CUDA probing, CPU features: 6–8 lines such as "failed call
    to cuInit") come before absl's logging is initialised, so TF_CPP_MIN_LOG_LEVEL does not
    silence them; they read like errors and are shown only with -v. Later C++ logs are silenced
    by TF_CPP_MIN_LOG_LEVEL=3, errors included: those TensorFlow logs as it runs ops (oneDNN's
    "supports DT_INT64 only on platforms with AVX-512") are notes, not failures, and a failure
    reaches the user as our one-line error.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # later C++ logs: none
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _one_line(error):
    """The line of `error` that says what is wrong.

    TensorFlow wraps an error raised while tracing a `tf.function` as "in user code:", a
    stack, and the cause last; Keras wraps one raised in a layer as "Exception encountered
    when calling ...", the cause next.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0] == "in user code:":
        return lines[-1]
    if lines[0].startswith("Exception encountered when calling") and len(lines) > 1:
        return lines[1]
    return lines[0]


#: Where XLA keeps compiled programs between commands (`KERAS_S2S_XLA_CACHE`; empty: nowhere).
XLA_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "keras-s2s", "xla")


def _keep_xla_programs():
    """Point TensorFlow's persistent XLA compilation cache at `XLA_CACHE`, before TensorFlow
    starts, unless TF_XLA_FLAGS already names one: `--xla on` then compiles each input shape
    once per machine and model configuration, not once per command (the compilation is what
    made XLA lose end to end on short outputs). A cache that cannot be made is skipped."""
    directory = os.environ.get("KERAS_S2S_XLA_CACHE", XLA_CACHE)
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if not directory or "tf_xla_persistent_cache_directory" in flags:
        return
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        logging.getLogger(__name__).warning("XLA programs are not kept between commands: %s",
                                            error)
        return
    os.environ["TF_XLA_FLAGS"] = f"{flags} --tf_xla_persistent_cache_directory={directory}"


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "xla", getattr(args, "jit_compile", "off")) != "off":
        _keep_xla_programs()
    server = getattr(args, "server", None) or ""
    if not args.verbose and not server.startswith(("http:", "https:")):  # REST needs no TF
        _start_tensorflow_quietly()
    try:
        args.handler(args)
    except USER_ERRORS as error:
        print(f"keras-s2s {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"keras-s2s {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
