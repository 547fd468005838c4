"""Full-size Marian checkpoints through keras-s2s: import, sizes, loading, memory and greedy
decoding speed against CTranslate2 and PyTorch.

The checkpoint is made here with random weights: transformers' `MarianConfig` at OPUS-MT's
base size (`--size base`: d_model 512, 6 + 6 layers, 8 heads, feed-forward 2048, one shared
60k vocabulary) or transformer-big as the OPUS-MT tc-big checkpoints (`--size big`: d_model
1024, 6 + 6 layers, 16 heads, feed-forward 4096, separate 60k source and target vocabularies),
swish, saved by `save_pretrained` with a small SentencePiece model and vocabularies padded to
60k tokens. (`--size tiny` runs every step on a small model in a minute or two.)

END's output bias is -1e9 in the checkpoint, so that every decoder (ours, the SavedModel,
CTranslate2 converted from the same checkpoint, PyTorch's `generate`) gives exactly
`NEW_TOKENS` output tokens: checked for each, and for the server by its texts equal to ours.

Figures, each step's peak resident memory (`ru_maxrss` of its child process) beside it:

- `import` (`keras-s2s import`, seconds), `run_megabytes`, `load_seconds` (`Translator.load`,
  which reads `model.keras`);
- `fine_tune`: a child running `keras-s2s train --init-from` for one epoch at batch 32 on
  generated sentences;
- full mode: `tflite_float32` and `tflite_dynamic` (`keras-s2s tflite`: seconds, megabytes, or
  why it failed), `export` (`keras-s2s export`) and the server's peak memory;
- greedy decoding tokens/s at batch 1 and 32 of ours (graph mode; full mode: also XLA and the
  SavedModel served by `keras-s2s serve` over REST on 127.0.0.1), CTranslate2 float32 and int8
  (its own `TransformersConverter`, 2 threads) and Hugging Face's PyTorch `generate(num_beams=1)`
  (2 threads), timed in interleaved rounds: `--repeats` at batch 1 (default 3 in full mode),
  one at batch 32, after one warm-up call each;
- `bench_peak_rss_gib`: this process (the PyTorch model, ours, CTranslate2's, XLA's programs).

`--tflite-only`: the import and the two TFLite conversions alone (minutes at base size) →
`marian_<size>_tflite.json`.

Usage: python bench/marian.py [--quick | --tflite-only] [--size base|big|tiny] [--repeats N]
                              [--no-fine-tune]
"""

import argparse
import functools
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO_ROOT, interleaved_medians, write_result

#: The Marian configuration of each size (`MarianConfig` arguments), and its vocabulary size.
SIZES = {
    "base": dict(d_model=512, encoder_attention_heads=8, decoder_attention_heads=8,
                 encoder_ffn_dim=2048, decoder_ffn_dim=2048, encoder_layers=6, decoder_layers=6,
                 share_encoder_decoder_embeddings=True),
    "big": dict(d_model=1024, encoder_attention_heads=16, decoder_attention_heads=16,
                encoder_ffn_dim=4096, decoder_ffn_dim=4096, encoder_layers=6, decoder_layers=6,
                share_encoder_decoder_embeddings=False),
    "tiny": dict(d_model=64, encoder_attention_heads=2, decoder_attention_heads=2,
                 encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_layers=2, decoder_layers=2,
                 share_encoder_decoder_embeddings=False),
}
VOCABULARY_SIZES = {"base": 60_000, "big": 60_000, "tiny": 2_000}
WORDS = "the a school home friend went ate rice today we they I you go come see".split()
NEW_TOKENS = 32  # output tokens of every decoder (the run's max length)
FINE_TUNE_PAIRS = 128
THREADS = 2  # CTranslate2's and PyTorch's
STEP_TIMEOUT = 900  # seconds a child step (conversion, fine-tuning) may take
GIB = 2**20  # ru_maxrss is in KiB on Linux


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="no TFLite, XLA or REST, one timed round at batch 1")
    parser.add_argument("--size", choices=list(SIZES), default="base")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds at batch 1 (default: 1 quick, 3 full)")
    parser.add_argument("--tflite-only", action="store_true",
                        help="the import and the TFLite conversions alone")
    parser.add_argument("--no-fine-tune", action="store_true",
                        help="leave the fine-tuning step out (minutes at the big size)")
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    return args


def write_checkpoint(directory, size):
    """A random Marian checkpoint of `size` in Hugging Face's layout, in `directory`; END's
    output bias -1e9."""
    import sentencepiece
    import torch
    import transformers

    texts = [" ".join(random.Random(i).choices(WORDS, k=8)) for i in range(300)]
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=proto, vocab_size=40, model_type="unigram",
        hard_vocab_limit=False, minloglevel=2, num_threads=1)
    processor = sentencepiece.SentencePieceProcessor(model_proto=proto.getvalue())
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())
              if not (processor.is_control(i) or processor.is_unknown(i))]
    vocabulary_size = VOCABULARY_SIZES[size]
    tokens = ["</s>", "<unk>", *pieces]
    tokens += [f"<filler{i}>" for i in range(len(tokens), vocabulary_size - 1)] + ["<pad>"]
    vocabulary = {token: index for index, token in enumerate(tokens)}
    config = transformers.MarianConfig(
        vocab_size=vocabulary_size, decoder_vocab_size=vocabulary_size,
        pad_token_id=vocabulary_size - 1, decoder_start_token_id=vocabulary_size - 1,
        eos_token_id=0, forced_eos_token_id=None, activation_function="swish",
        scale_embedding=True, max_position_embeddings=512, **SIZES[size])
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias[0, config.eos_token_id] = -1e9
    model.save_pretrained(directory)
    for name in ("source.spm", "target.spm"):
        (directory / name).write_bytes(proto.getvalue())
    separate = not config.share_encoder_decoder_embeddings
    for name in ("vocab.json", *(["target_vocab.json"] if separate else [])):
        (directory / name).write_text(json.dumps(vocabulary))
    from keras_s2s.importers.marian import TOKENIZER_SETTINGS

    (directory / TOKENIZER_SETTINGS).write_text(json.dumps({"separate_vocabs": separate}))
    return model


def directory_megabytes(directory):
    return sum(path.stat().st_size for path in Path(directory).rglob("*") if path.is_file()) / 1e6


def keras_s2s_child(*arguments):
    """`{"seconds", "peak_rss_gib"}` of `keras-s2s ARGUMENTS` in a child process, and
    `"failed"` (its last line of error, or the time limit) if it did not succeed."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "keras_s2s.cli", *map(str, arguments)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    killer = threading.Timer(STEP_TIMEOUT, process.kill)
    killer.start()
    errors = process.stderr.read().decode(errors="replace").strip().splitlines()
    _, status, usage = os.wait4(process.pid, 0)
    killer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    figures = {"seconds": round(time.perf_counter() - start, 1),
               "peak_rss_gib": round(usage.ru_maxrss / GIB, 2)}
    if process.returncode < 0:  # a signal: the time limit's, or the kernel's out of memory
        figures["failed"] = (f"killed at the {STEP_TIMEOUT} s limit"
                             if figures["seconds"] >= STEP_TIMEOUT
                             else f"killed by signal {-process.returncode}")
    elif process.returncode:
        figures["failed"] = errors[-1] if errors else f"exit {process.returncode}"
    return figures


def fine_tune(run, directory):
    """The figures of a child fine-tuning `run` for one epoch at batch 32."""
    rng = random.Random(1)
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(3, 10)))
                 for _ in range(FINE_TUNE_PAIRS)]
    data = directory / "pairs.tsv"
    data.write_text("".join(f"{s}\t{s}\n" for s in sentences))
    return keras_s2s_child("train", "--init-from", run, "--data", data, "--out",
                           directory / "tuned", "--epochs", 1, "--batch-size", 32, "--xla", "off",
                           "--mixed-precision", "off")


def tflite_sizes(run, directory):
    """`{"tflite_float32", "tflite_dynamic"}`: each conversion's figures and megabytes."""
    figures = {}
    for quantize, name in (("none", "float32"), ("dynamic", "dynamic")):
        path = directory / f"{name}.tflite"
        figures[f"tflite_{name}"] = step = keras_s2s_child("tflite", run, "--out", path,
                                                           "--quantize", quantize)
        if "failed" not in step:
            step["megabytes"] = round(path.stat().st_size / 1e6, 1)
    return figures


def fixed_length(rows):
    """`rows` (token lists), checked to hold `NEW_TOKENS` tokens each."""
    lengths = {len(row) for row in rows}
    if lengths != {NEW_TOKENS}:
        raise AssertionError(f"output lengths {sorted(lengths)}, not all {NEW_TOKENS}")
    return rows


def contenders(translators, checkpoint, hf_model, directory, server):
    """`{name: texts → output token lists (or texts, for the server)}` of every decoder."""
    import ctranslate2
    import torch
    import transformers

    from keras_s2s.decoding import Greedy
    from keras_s2s.serving import Client

    torch.set_num_threads(THREADS)
    tokenizer = transformers.MarianTokenizer(
        str(checkpoint / "source.spm"), str(checkpoint / "target.spm"),
        str(checkpoint / "vocab.json"))

    def ours(translator, texts):
        return [t.output_tokens for t in translator.translate(texts, Greedy(),
                                                              attention=False)]

    def ct2(engine, texts):
        sources = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(texts)["input_ids"]]
        return [result.hypotheses[0] for result in engine.translate_batch(
            sources, beam_size=1, max_decoding_length=NEW_TOKENS, return_end_token=True)]

    def hugging_face(texts):
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            output = hf_model.generate(**batch, max_new_tokens=NEW_TOKENS, num_beams=1,
                                       do_sample=False)
        return [row[1:] for row in output.tolist()]  # without the start token

    decoders = {f"ours_{name}": functools.partial(ours, translator)
                for name, translator in translators.items()}
    if server is not None:
        client = Client(server.url, "marian", timeout=STEP_TIMEOUT)
        decoders["rest"] = lambda texts: [r["translation"] for r in client.translate(texts)]
    for quantization in ("float32", "int8"):
        converted = directory / f"ct2-{quantization}"
        ctranslate2.converters.TransformersConverter(str(checkpoint)).convert(
            str(converted), quantization=quantization)
        engine = ctranslate2.Translator(str(converted), intra_threads=THREADS)
        decoders[f"ctranslate2_{quantization}"] = functools.partial(ct2, engine)
    decoders["hugging_face_pytorch"] = hugging_face
    return decoders


def decoding_speeds(decoders, translator, repeats):
    """`{name_batch_N: tokens/s}` at batch 1 (`repeats` rounds) and 32 (one round), each
    decoder called once first (warm-up and the length check)."""
    rng = random.Random(2)
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(4, 12))) for _ in range(32)]
    speeds = {}
    for texts, rounds in ((sentences[:1], repeats), (sentences, 1)):
        expected = [t.text for t in translator.translate(texts, attention=False)]
        for name, decode in decoders.items():
            outputs = decode(texts)
            if name == "rest":
                assert outputs == expected, "the server's texts are not ours"
            else:
                fixed_length(outputs)
        seconds = interleaved_medians({name: functools.partial(decode, texts)
                                       for name, decode in decoders.items()}, rounds, warmup=0)
        speeds.update({f"{name}_batch_{len(texts)}": round(len(texts) * NEW_TOKENS / value, 1)
                       for name, value in seconds.items()})
    return speeds


def main():
    args = parse_args()
    from keras_s2s.inference.translator import Translator
    from serving import ServerProcess

    figures = {"size": args.size, "load_average_at_start": list(os.getloadavg())}

    def record():
        figures["load_average_at_end"] = list(os.getloadavg())
        name = "marian" if args.quick else f"marian_{args.size}"
        write_result(f"{name}_tflite" if args.tflite_only else name, args, figures)

    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        checkpoint, run = directory / "checkpoint", directory / "run"
        checkpoint.mkdir()
        hf_model = write_checkpoint(checkpoint, args.size)
        figures["parameters"] = sum(p.numel() for p in hf_model.parameters())
        figures["import"] = keras_s2s_child("import", checkpoint, "--out", run,
                                            "--max-length", NEW_TOKENS)
        record()
        if args.tflite_only:
            figures.update(tflite_sizes(run, directory))
            record()
            return
        figures["run_megabytes"] = round(directory_megabytes(run), 1)
        start = time.perf_counter()
        translator = Translator.load(str(run))
        figures["load_seconds"] = round(time.perf_counter() - start, 1)
        translators = {"graph": translator}
        server = None
        if not args.quick:
            figures.update(tflite_sizes(run, directory))
            record()
            figures["export"] = keras_s2s_child("export", run, "--model-name", "marian",
                                                "--base-path", directory / "export")
            translators["xla"] = Translator(
                translator.model, translator.source_tokenizer, translator.target_tokenizer,
                translator.max_source_length, translator.max_target_length, jit_compile=True)
            try:
                server = ServerProcess(str(REPO_ROOT), str(directory / "export" / "marian"),
                                       model_name="marian", start_seconds=STEP_TIMEOUT)
            except RuntimeError as error:  # it did not answer within the limit
                figures["serve_failed"] = str(error)
        try:
            decoders = contenders(translators, checkpoint, hf_model, directory, server)
            figures["greedy_tokens_per_second"] = decoding_speeds(decoders, translator,
                                                                  args.repeats)
            if server is not None:
                figures["serve_peak_rss_gib"] = round(
                    server.memory_mb()["peak_rss_mb"] / 1024, 2)
        finally:
            if server is not None:
                server.stop()
        figures["bench_peak_rss_gib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / GIB, 2)
        record()  # what is measured so far stays, should fine-tuning not finish
        if not args.no_fine_tune:
            figures["fine_tune"] = fine_tune(run, directory)
    record()


if __name__ == "__main__":
    main()
