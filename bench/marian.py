"""A base-size Marian checkpoint through keras-s2s: import, sizes, loading, fine-tuning memory
and greedy decoding speed.

The checkpoint is made here: transformers' `MarianConfig` at OPUS-MT's base size (d_model 512,
6 + 6 layers, 8 heads, feed-forward 2048, swish, a shared 60k vocabulary) with random weights,
saved by `save_pretrained`, with a small SentencePiece model and a `vocab.json` padded to 60k
tokens. Figures:

- `import_seconds` (`keras-s2s import`), `run_megabytes`, `load_seconds` (`Translator.load`,
  which reads `model.keras`);
- `fine_tune_peak_rss_gib`: the peak resident memory (`ru_maxrss`) of a `keras-s2s train
  --init-from` child process fine-tuning one epoch at batch 32 on generated sentences;
- `tflite_megabytes` (float32 and dynamic range; not with `--quick`);
- greedy decoding tokens/s at batch 1 and 32 of ours (graph mode), CTranslate2 float32 and
  int8 (its converter, from the same checkpoint) and Hugging Face's PyTorch `generate`; each
  decodes to 32 tokens at most (random weights rarely end earlier), the end token
  included.

Usage: python bench/marian.py [--quick]
"""

import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import parse_args, write_result

CONFIG = dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
              decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
              activation_function="swish", scale_embedding=True,
              share_encoder_decoder_embeddings=True, max_position_embeddings=512)
VOCABULARY_SIZE = 60_000
WORDS = "the a school home friend went ate rice today we they I you go come see".split()
NEW_TOKENS = 32  # the most output tokens, the end token included (the run's max length)
FINE_TUNE_PAIRS = 128


def write_checkpoint(directory):
    """A random base-size Marian checkpoint in Hugging Face's layout, in `directory`."""
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
    tokens = ["</s>", "<unk>", *pieces]
    tokens += [f"<filler{i}>" for i in range(len(tokens), VOCABULARY_SIZE - 1)] + ["<pad>"]
    vocabulary = {token: index for index, token in enumerate(tokens)}
    config = transformers.MarianConfig(
        vocab_size=VOCABULARY_SIZE, decoder_vocab_size=VOCABULARY_SIZE,
        pad_token_id=VOCABULARY_SIZE - 1, decoder_start_token_id=VOCABULARY_SIZE - 1,
        eos_token_id=0, forced_eos_token_id=None, **CONFIG)
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()
    model.save_pretrained(directory)
    for name in ("source.spm", "target.spm"):
        (directory / name).write_bytes(proto.getvalue())
    (directory / "vocab.json").write_text(json.dumps(vocabulary))
    return model


def directory_megabytes(directory):
    return sum(path.stat().st_size for path in Path(directory).rglob("*") if path.is_file()) / 1e6


def fine_tune_peak_rss(run, directory):
    """Peak RSS (GiB) of a child fine-tuning `run` for one epoch at batch 32."""
    rng = random.Random(1)
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(3, 10)))
                 for _ in range(FINE_TUNE_PAIRS)]
    data = directory / "pairs.tsv"
    data.write_text("".join(f"{s}\t{s}\n" for s in sentences))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "keras_s2s.cli", "train", "--init-from", str(run),
                    "--data", str(data), "--out", str(directory / "tuned"), "--epochs", "1",
                    "--batch-size", "32", "--xla", "off", "--mixed-precision", "off"],
                   check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        raise RuntimeError("the fine-tuning child's peak RSS is not above an earlier child's")
    return peak / 2**20  # ru_maxrss is in KiB on Linux


def tokens_per_second(decode, batches):
    """Output tokens per second of `decode(texts) → list of token lists` over `batches`."""
    decode(batches[0])  # warm-up: tracing, loading
    start, tokens = time.perf_counter(), 0
    for texts in batches:
        tokens += sum(len(row) for row in decode(texts))
    return tokens / (time.perf_counter() - start)


def decoding_speeds(translator, checkpoint, hf_model, directory, quick):
    """Greedy tokens/s at batch 1 and 32 of each implementation."""
    import ctranslate2
    import torch
    import transformers

    from keras_s2s.decoding import Greedy

    rng = random.Random(2)
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(4, 12))) for _ in range(64)]
    shapes = {1: [[s] for s in sentences[:4 if quick else 16]], 32: [sentences[:32]]}
    tokenizer = transformers.MarianTokenizer(
        str(checkpoint / "source.spm"), str(checkpoint / "target.spm"),
        str(checkpoint / "vocab.json"))
    converted = {}
    for quantization in ("float32", "int8"):
        converted[quantization] = directory / f"ct2-{quantization}"
        ctranslate2.converters.TransformersConverter(str(checkpoint)).convert(
            str(converted[quantization]), quantization=quantization)

    def ours(texts):
        return [t.output_tokens for t in translator.translate(texts, Greedy(),
                                                              attention=False)]

    def ct2(quantization):
        engine = ctranslate2.Translator(str(converted[quantization]), intra_threads=2)

        def decode(texts):
            sources = [tokenizer.convert_ids_to_tokens(ids)
                       for ids in tokenizer(texts)["input_ids"]]
            return [result.hypotheses[0] for result in engine.translate_batch(
                sources, beam_size=1, max_decoding_length=NEW_TOKENS, return_end_token=True)]
        return decode

    def hugging_face(texts):
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            output = hf_model.generate(**batch, max_new_tokens=NEW_TOKENS, num_beams=1,
                                       do_sample=False)
        rows = [row[1:] for row in output.tolist()]  # without the start token
        end = hf_model.config.eos_token_id
        return [row[:row.index(end) + 1] if end in row else row for row in rows]

    contenders = {"ours": ours, "ctranslate2_float32": ct2("float32"),
                  "ctranslate2_int8": ct2("int8"), "hugging_face_pytorch": hugging_face}
    return {f"{name}_batch_{size}": round(tokens_per_second(decode, batches), 1)
            for name, decode in contenders.items() for size, batches in shapes.items()}


def main():
    args = parse_args(__doc__.splitlines()[0])
    from keras_s2s.importers.marian import import_marian
    from keras_s2s.inference.translator import Translator

    figures = {"load_average_at_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        checkpoint = directory / "checkpoint"
        checkpoint.mkdir()
        hf_model = write_checkpoint(checkpoint)
        figures["parameters"] = sum(p.numel() for p in hf_model.parameters())
        start = time.perf_counter()
        import_marian(str(checkpoint), str(directory / "run"), max_length=NEW_TOKENS)
        figures["import_seconds"] = round(time.perf_counter() - start, 1)
        figures["run_megabytes"] = round(directory_megabytes(directory / "run"), 1)
        start = time.perf_counter()
        translator = Translator.load(str(directory / "run"))
        figures["load_seconds"] = round(time.perf_counter() - start, 1)
        figures["fine_tune_peak_rss_gib"] = round(fine_tune_peak_rss(directory / "run",
                                                                     directory), 2)
        if not args.quick:
            from keras_s2s.exporters.tflite import convert

            for quantize in ("none", "dynamic"):
                size = convert(str(directory / "run"), str(directory / f"{quantize}.tflite"),
                               quantize=quantize)
                figures[f"tflite_megabytes_{quantize}"] = round(size / 1e6, 1)
        figures["greedy_tokens_per_second"] = decoding_speeds(
            translator, checkpoint, hf_model, directory, args.quick)
    figures["load_average_at_end"] = list(os.getloadavg())
    write_result("marian", args, figures)


if __name__ == "__main__":
    main()
