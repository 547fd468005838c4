"""Peak memory and speed of the streamed input pipeline (`keras-s2s train --stream`) against the
corpus size: 100k and 2M generated pairs (`--quick`: 10k and 200k), each in a fresh process.

Each child runs what `train` runs before `fit`: the hash split, the vocabularies learned from the
bounded sample, `make_dataset` on the stream; then one epoch of batches is drawn. Figures:
peak RSS (`ru_maxrss`) and pairs per second of that epoch. Memory bounded by the design means
the RSS ratio between the sizes stays near 1 (goal ≤ 1.3) while the corpus grows 20 times.

Usage: python bench/streaming_memory.py [--quick]
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

#: Distinct generated pairs, written again and again up to the corpus size (generating 2M dates
#: in Python would take longer than the measurement).
_DISTINCT_PAIRS = 50_000


def write_corpus(path, num_pairs):
    from keras_s2s.data import synthetic
    distinct = min(num_pairs, _DISTINCT_PAIRS)
    pairs = synthetic.generate("dates", distinct, seed=0)
    lines = "".join(f"{source}\t{target}\n" for source, target in pairs)
    with open(path, "w", encoding="utf-8") as file:
        for _ in range(num_pairs // distinct):
            file.write(lines)


def child(path):
    """One measurement: prints `{"pairs", "seconds", "pairs_per_second", "peak_rss_mib"}`."""
    from keras_s2s.training.config import TrainConfig
    from keras_s2s.data import make_dataset, train_tokenizers
    from keras_s2s.data.corpus import load_pairs, vocabulary_pairs

    config = TrainConfig(arch="transformer", data=path, out="unused", stream=True,
                         vocab_size=2000, batch_size=64)
    train_pairs, _ = load_pairs(config)
    source_tokenizer, target_tokenizer = train_tokenizers(vocabulary_pairs(train_pairs),
                                                          config.vocab_size)
    dataset, _ = make_dataset(train_pairs, source_tokenizer, target_tokenizer,
                              config.batch_size, config.max_source_length,
                              config.max_target_length, shuffle=True, seed=0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pairs, started = 0, time.perf_counter()
    for (source_ids, _), _ in dataset:
        pairs += int(source_ids.shape[0])
    seconds = time.perf_counter() - started
    print(json.dumps({
        "pairs": pairs, "seconds": round(seconds, 1),
        "pairs_per_second": round(pairs / seconds),
        "peak_rss_mib_before_the_epoch": round(rss_before),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def main():
    from bench.common import parse_args, write_result
    args = parse_args(__doc__.splitlines()[0])
    sizes = (10_000, 200_000) if args.quick else (100_000, 2_000_000)
    figures = {"load_average_at_start": os.getloadavg(), "by_corpus_pairs": {}}
    with tempfile.TemporaryDirectory() as directory:
        for size in sizes:
            path = os.path.join(directory, f"pairs_{size}.tsv")
            write_corpus(path, size)
            completed = subprocess.run([sys.executable, __file__, "--child", path],
                                       capture_output=True, text=True,
                                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            if completed.returncode:
                sys.exit(f"the measurement of {size} pairs failed:\n{completed.stderr[-3000:]}")
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            result["file_mib"] = round(os.path.getsize(path) / 2**20)
            figures["by_corpus_pairs"][size] = result
            os.remove(path)
    small, large = (figures["by_corpus_pairs"][size] for size in sizes)
    figures["rss_ratio"] = round(large["peak_rss_mib"] / small["peak_rss_mib"], 3)
    figures["load_average_at_end"] = os.getloadavg()
    write_result("streaming_memory", args, figures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main()
