"""The `keras-s2s` command: train, average, translate, evaluate, export, tflite (and serve,
explore).

Errors a user can cause (missing run directory, unknown architecture, bad data) end with a
one-line message and exit status 2, without a traceback.
"""

import argparse
import json
import logging
import os
import sys

from keras_s2s import architectures
from keras_s2s.config import DECAYS, DISTRIBUTE_CHOICES, TOKENIZER_KINDS, VALIDATION_SPLITS

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
non_negative_int = _number(int, lambda value: value >= 0, "an integer >= 0")
positive_float = _number(float, lambda value: value > 0, "a positive number")
fraction = _number(float, lambda value: 0 <= value < 1, "a number in [0, 1)")
port_number = _number(int, lambda value: 0 <= value <= 65535, "a port number in [0, 65535]")

#: `keras_s2s.tflite.QUANTIZATIONS`, without importing TensorFlow to build the parser.
TFLITE_QUANTIZATIONS = ("none", "dynamic", "float16")
#: `keras_s2s.ctranslate2_export.QUANTIZATIONS`, for the same reason.
CTRANSLATE2_QUANTIZATIONS = ("none", "int8", "int8_float32", "float16")


def _add_train_parser(subparsers):
    parser = subparsers.add_parser(
        "train", help="train a model into a run directory",
        description="Train a model on a built-in task (dates, reverse, copy) or a TSV file of "
                    "source<TAB>target pairs. An interrupted run resumes when restarted with "
                    "the same --out.")
    parser.add_argument("--arch", choices=architectures.names(), default="bahdanau")
    parser.add_argument("--data", default="dates",
                        help="built-in task name (dates, reverse, copy) or TSV files (a path or "
                             "a quoted glob such as 'corpus/*.tsv')")
    parser.add_argument("--out", required=True, help="run directory to create")
    parser.add_argument("--val", help="TSV of validation pairs (default: a split of --data)")
    parser.add_argument("--extra-data", metavar="TSV",
                        help="more training pairs (a path or a quoted glob), added after the "
                             "validation split is carved from --data, so that scores stay "
                             "--data's; pairs sharing a sentence with that split are left out")
    parser.add_argument("--both-directions", action="store_true",
                        help="also train on each training pair reversed (target → source): "
                             "twice the pairs for a small corpus, one model learning both "
                             "directions; needs --shared-vocab. Validation stays one way")
    parser.add_argument("--validation-split", choices=VALIDATION_SPLITS, default="random",
                        help="without --val: a random sample of --data's pairs, or whole "
                             "groups of pairs that share a source or target sentence (for "
                             "corpora with several translations of one sentence, as Tatoeba)")
    parser.add_argument("--validation-fraction", type=fraction, default=0.05,
                        help="without --val: the share of --data's pairs held out")
    parser.add_argument("--stream", action="store_true",
                        help="stream the TSV files line by line (memory independent of their "
                             "size): validation split by a hash of each pair, vocabularies from "
                             "the first 100,000 training pairs, a bounded shuffle buffer")
    parser.add_argument("--epochs", type=positive_int,
                        help="default: 4 for dates, 15 for reverse/copy, 30 for TSV files "
                             "(with early stopping)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--batch-tokens", type=positive_int, metavar="N",
                        help="token-based batching: batches of at most N padded tokens (the "
                             "longer side) from pairs of similar length, instead of "
                             "--batch-size pairs")
    parser.add_argument("--num-pairs", type=positive_int, default=20000,
                        help="built-in tasks: number of training pairs to generate")
    parser.add_argument("--min-length", type=positive_int, help="reverse/copy: shortest sequence")
    parser.add_argument("--max-length", type=positive_int, help="reverse/copy: longest sequence")
    parser.add_argument("--source-column", type=non_negative_int, default=0)
    parser.add_argument("--target-column", type=non_negative_int, default=1,
                        help="TSV column of the target (Anki files put English in column 0)")
    parser.add_argument("--skip-bad-lines", action="store_true",
                        help="count and skip malformed TSV lines instead of stopping")
    parser.add_argument("--vocab-size", type=positive_int,
                        help="the most subwords a vocabulary learns (default: 2,000, fewer "
                             "without a word when the corpus holds fewer; a size asked for and "
                             "not reached is a warning)")
    parser.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default="wordpiece",
                        help="subword model: WordPiece, or a SentencePiece unigram model "
                             "(learned in seconds from raw text; runs in-graph)")
    parser.add_argument("--shared-vocab", action="store_true",
                        help="one subword vocabulary for both sides")
    parser.add_argument("--lowercase", action="store_true")
    parser.add_argument("--max-source-length", type=positive_int, default=64)
    parser.add_argument("--max-target-length", type=positive_int, default=64)
    parser.add_argument("--learning-rate", type=positive_float,
                        help="RNNs: Adam's rate (1e-3); Transformer: scale of the warm-up "
                             "schedule (1.0)")
    parser.add_argument("--warmup-steps", type=positive_int, default=1000)
    parser.add_argument("--decay", choices=DECAYS, default="family",
                        help="the rate after warm-up: the family's (the Transformer's inverse "
                             "square root, constant for RNNs), or linear: to zero when the time "
                             "budget (or else the epochs) is spent, for budgeted training")
    parser.add_argument("--label-smoothing", type=fraction, default=0.1)
    parser.add_argument("--word-dropout", type=fraction, default=0.0, metavar="P",
                        help="in training, replace each input token by [UNK] with probability "
                             "P (a regularizer for small corpora)")
    parser.add_argument("--patience", type=positive_int, default=3, help="early stopping patience")
    parser.add_argument("--time-budget", type=positive_float, metavar="MINUTES",
                        help="stop training after this many minutes of wall-clock time (a "
                             "resumed run starts the minutes afresh, and with them --decay "
                             "linear's clock)")
    parser.add_argument("--average-last", type=positive_int, default=1, metavar="N",
                        help="save the mean of the weights of the N epochs that end at the best "
                             "one (checkpoint averaging; 1: the best epoch's weights; all the "
                             "epochs up to the best when it comes before epoch N)")
    parser.add_argument("--model-arg", action="append", default=[], metavar="NAME=VALUE",
                        help="override a model argument, e.g. units=512 or num_layers=2 "
                             "(repeatable; VALUE is JSON or a plain string)")
    parser.add_argument("--mixed-precision", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--xla", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--distribute", choices=DISTRIBUTE_CHOICES, default="auto",
                        help="auto: mirrored over a machine's GPUs when it has several; "
                             "multi-worker: one worker of the TF_CONFIG cluster "
                             "(docs/scale_out.md)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.set_defaults(handler=_train)


def parse_assignments(items, flag="--model-arg"):
    """`NAME=VALUE` items of a repeatable `flag` → `{NAME: VALUE}`, VALUE read as JSON or else
    kept as a plain string."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} expects NAME=VALUE, got {item!r}")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    return overrides


def train_config(args):
    """The `TrainConfig` of parsed `keras-s2s train` arguments."""
    from keras_s2s.config import TrainConfig

    task_options = {name: getattr(args, name) for name in ("min_length", "max_length")
                    if getattr(args, name) is not None}
    return TrainConfig(
        arch=args.arch, data=args.data, out=args.out, val=args.val, stream=args.stream,
        extra_data=args.extra_data, both_directions=args.both_directions,
        validation_split=args.validation_split, validation_fraction=args.validation_fraction,
        epochs=args.epochs, batch_size=args.batch_size, batch_tokens=args.batch_tokens,
        num_pairs=args.num_pairs, task_options=task_options,
        source_column=args.source_column, target_column=args.target_column,
        on_error="skip" if args.skip_bad_lines else "raise", vocab_size=args.vocab_size,
        tokenizer=args.tokenizer, shared_vocab=args.shared_vocab, lowercase=args.lowercase,
        max_source_length=args.max_source_length, max_target_length=args.max_target_length,
        learning_rate=args.learning_rate, warmup_steps=args.warmup_steps, decay=args.decay,
        label_smoothing=args.label_smoothing, word_dropout=args.word_dropout,
        early_stopping_patience=args.patience,
        time_budget_minutes=args.time_budget, average_last=args.average_last,
        model=parse_assignments(args.model_arg), mixed_precision=args.mixed_precision,
        jit_compile=args.xla, distribute=args.distribute, seed=args.seed)


def _train(args):
    from keras_s2s.training import train

    history = train(train_config(args), verbose=2 if not sys.stdout.isatty() else "auto")
    best = min(history.get("val_loss", [float("nan")]))
    accuracy = max(history.get("val_masked_accuracy", [float("nan")]))
    where = f"into {args.out}"
    if args.distribute == "multi-worker":
        from keras_s2s.multi_worker import Cluster

        cluster = Cluster.from_environment()
        where = (f"as worker {cluster.rank} of {cluster.num_workers}, "
                 + (where if cluster.is_chief else f"the chief writing {args.out}"))
    print(f"trained {args.arch} on {args.data} {where}: best val_loss {best:.4f}, "
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
    from keras_s2s.training import average

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
                        help="translate through a TF Serving REST endpoint instead, e.g. "
                             "http://127.0.0.1:8501 (the export fixes the decoding)")
    parser.add_argument("--model", help="model name on the server (with --server)")
    _add_decoding_arguments(parser)
    parser.add_argument("--attention-plot", metavar="OUT.png",
                        help="write the attention heat map of the first input")
    parser.add_argument("--scores", action="store_true", help="print the score before each line")
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


def _strategy(args, path=None):
    """The `keras_s2s.decoding` strategy of the decoding flags: the one place they meet.

    Beam search's α is `--alpha`, else the one `tune-alpha` stored in the run at `path`, else
    0.6."""
    from keras_s2s.decoding import Beam, Greedy, Sample
    from keras_s2s.run_dir import tuned_alpha

    given = {name: getattr(args, name) for name in DECODING_FLAGS.values()
             if getattr(args, name, None) is not None}
    sampling = {name: given[name] for name in ("temperature", "top_k", "top_p", "seed")
                if name in given}
    if sampling and {"beam", "alpha", "n_best"} & set(given):
        raise ValueError("choose beam search (--beam, --alpha, --n-best) or sampling "
                         "(--temperature, --top-k, --top-p, --seed), not both")
    if sampling:
        if set(sampling) == {"seed"}:
            raise ValueError("--seed applies to sampling: give --temperature, --top-k or "
                             "--top-p too")
        return Sample(**sampling)
    if "beam" in given:
        alpha = given.get("alpha", path and tuned_alpha(path))
        return Beam(width=given["beam"], alpha=0.6 if alpha is None else alpha,
                    n_best=given.get("n_best", 1))
    if given:
        raise ValueError("--alpha and --n-best apply to beam search: give --beam WIDTH too")
    return Greedy()


def _add_xla_argument(parser):
    parser.add_argument("--xla", choices=["on", "off"], default="off",
                        help="compile decoding with XLA: one compilation per input shape, "
                             "kept between commands in $KERAS_S2S_XLA_CACHE (default "
                             "~/.cache/keras-s2s/xla); faster steps, so it pays once compiled")


def _translate(args):
    if args.server:
        return _translate_remotely(args)
    from keras_s2s.run_dir import check_translatable
    from keras_s2s.translator import load_translator

    if args.run_dir is None:
        raise ValueError("give a run directory, or --server URL --model NAME")
    check_translatable(args.run_dir)
    strategy = _strategy(args, args.run_dir)
    texts = _texts_to_translate(args.text)
    translator = load_translator(args.run_dir, jit_compile=args.xla == "on")
    translations = translator.translate(texts, strategy=strategy,
                                        attention=bool(args.attention_plot))
    for translation in translations:
        for hypothesis in [translation, *translation.alternatives]:
            print(f"{hypothesis.score:.4f}\t{hypothesis.text}" if args.scores
                  else hypothesis.text)
    if args.attention_plot:
        first = translations[0]
        if first.attention is None:
            raise ValueError(f"the model in {args.run_dir} has no attention to plot (seq2seq)")
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
    """Send the texts to a TF Serving (or `keras-s2s serve`) model's serving_default."""
    ignored = [flag for flag, name in DECODING_FLAGS.items() if getattr(args, name) is not None]
    ignored += ["--attention-plot"] * bool(args.attention_plot) + ["--xla on"] * (
        args.xla == "on")
    if ignored:
        raise ValueError(f"--server cannot honour {', '.join(ignored)}: the server's exported "
                         f"signature fixes the decoding (choose it with `keras-s2s export`)")
    from keras_s2s.serving import Client, ServingRequestError

    if not args.model:
        raise ValueError("--server needs --model NAME")
    texts = _texts_to_translate(([args.run_dir] if args.run_dir else []) + args.text)
    try:
        results = Client(args.server, args.model).translate(texts)
    except ServingRequestError as error:
        raise ValueError(f"{args.server}: {error}") from error
    for result in results:
        if isinstance(result, dict):
            text = result["translation"]
            print(f"{result['score']:.4f}\t{text}" if args.scores else text)
        else:
            print(result)


def _add_serve_parser(subparsers):
    from keras_s2s.serving.config import add_arguments

    parser = subparsers.add_parser(
        "serve", help="serve SavedModels over TensorFlow Serving's REST API",
        description="TensorFlow Serving's REST API (predict, classify, regress, status, "
                    "metadata) for exported SavedModels, with tensorflow_model_server's flag "
                    "names, for machines without TF Serving.")
    add_arguments(parser)
    parser.set_defaults(handler=_serve)


def _serve(args):
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
    from keras_s2s.explore.server import run

    run(args.run_dirs, host=args.host, port=args.port)


def _add_tune_alpha_parser(subparsers):
    from keras_s2s.evaluation import DEFAULT_ALPHAS

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
    from keras_s2s.evaluation import tune_alpha

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
    from keras_s2s.evaluation import evaluation_report
    from keras_s2s.run_dir import check_translatable
    from keras_s2s.translator import load_translator

    check_translatable(args.run_dir)
    strategy = _strategy(args, args.run_dir)
    if strategy.n_best > 1:
        raise ValueError("evaluate scores the best hypothesis: leave out --n-best")
    if args.data in synthetic.TASKS:
        pairs = synthetic.generate(args.data, args.num_pairs, seed=12345)
    else:
        pairs = read_tsv(args.data, source_column=args.source_column,
                         target_column=args.target_column)
    sources = [source for source, _ in pairs]
    references = [target for _, target in pairs]
    translations = load_translator(args.run_dir, jit_compile=args.xla == "on").translate(
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
    _add_decoding_arguments(parser)
    parser.set_defaults(handler=_export)


def _export(args):
    if args.format == "ctranslate2":
        return _export_ctranslate2(args)
    from keras_s2s.export import export_run

    if args.out or args.quantize != "none":
        raise ValueError("--out and --quantize apply to --format ctranslate2 (a SavedModel "
                         "goes to --base-path; `keras-s2s tflite` quantizes)")
    if not args.model_name:
        raise ValueError("export needs --model-name NAME (or --format ctranslate2 --out DIR)")
    print(export_run(args.run_dir, args.model_name, base_path=args.base_path,
                     version=args.version, strategy=_strategy(args, args.run_dir)))


def _export_ctranslate2(args):
    misplaced = [flag for flag, name in [*DECODING_FLAGS.items(), ("--model-name", "model_name"),
                                        ("--version", "version")]
                 if getattr(args, name) is not None]
    if misplaced:
        raise ValueError(f"--format ctranslate2 does not take {', '.join(misplaced)}: the "
                         f"decoding is chosen when translating")
    if not args.out:
        raise ValueError("--format ctranslate2 needs --out DIR")
    from keras_s2s.ctranslate2_export import export_ctranslate2

    print(export_ctranslate2(args.run_dir, args.out, quantize=args.quantize))


def _add_tflite_parser(subparsers):
    parser = subparsers.add_parser(
        "tflite", help="convert a run or an export to TensorFlow Lite",
        description="Write a builtin-ops-only .tflite model (token ids in, greedy token ids "
                    "out, fixed lengths) and its vocabularies beside it.")
    parser.add_argument("path", help="run directory or export version directory")
    parser.add_argument("--out", required=True, metavar="MODEL.tflite")
    parser.add_argument("--quantize", choices=TFLITE_QUANTIZATIONS, default="none",
                        help="weights: float32, int8 (dynamic range) or float16")
    parser.add_argument("--max-source-length", type=positive_int,
                        help="fixed source length, END included (default: the run's)")
    parser.add_argument("--max-target-length", type=positive_int,
                        help="fixed output length (default: the run's)")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="fixed batch size")
    parser.set_defaults(handler=_tflite)


def _tflite(args):
    from keras_s2s.tflite import convert

    size = convert(args.path, args.out, quantize=args.quantize,
                   max_source_length=args.max_source_length,
                   max_target_length=args.max_target_length, batch_size=args.batch_size)
    print(f"wrote {args.out} ({args.quantize}, {size} bytes)")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the usage of `train` is a screenful)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_import_parser(subparsers):
    parser = subparsers.add_parser(
        "import", help="import a pretrained OPUS-MT (Marian) checkpoint as a run",
        description="Write a run directory (as `train` leaves it, for translate, evaluate, "
                    "export, tflite and serve) from a Hugging Face Marian checkpoint: a local "
                    "directory in Hugging Face's layout (model.safetensors, source.spm, "
                    "target.spm, vocab.json), or a hub name such as Helsinki-NLP/opus-mt-ko-en, "
                    "downloaded with huggingface_hub.")
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
    silence them; they read like errors and are shown only with -v.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later C++ logs: errors only
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
    if getattr(args, "xla", "off") != "off":
        _keep_xla_programs()
    if not args.verbose and not getattr(args, "server", None):  # --server needs no TF
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
