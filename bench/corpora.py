"""The real corpora of `../shared/data` and the recipe the benchmarks train on them.

One place for the settings that `quality.py` and `claims.py` share, so that a figure in one
is comparable with a figure in the other. Benchmarks skip a corpus, with a reason, when its
file is absent.
"""

import os

from keras_s2s.training.config import TrainConfig

SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                           "data")

#: Each corpus's training settings. Tatoeba's kor-eng holds several Korean versions of many
#: English sentences, so its validation split holds out whole groups of pairs sharing a sentence
#: (a random split scores recall of sentences seen in training).
CORPORA = {
    # vocab_size is an upper bound: the WordPiece learner keeps subwords seen about 10 times,
    # which caps kor-eng's shared vocabulary below it (the sizes tried: docs/RESULTS.md §6)
    "kor-eng": dict(data=os.path.join(SHARED_DATA, "kor-eng", "train.tsv"), vocab_size=4000,
                    shared_vocab=True, max_source_length=48, max_target_length=48,
                    validation_split="grouped"),
    "multi30k": dict(data=os.path.join(SHARED_DATA, "multi30k", "train.tsv"), vocab_size=8000,
                     shared_vocab=True, max_source_length=64, max_target_length=64),
}
#: The official test sets that `quality.py` scores on; a corpus without one is scored on its
#: carved validation split (the split that training held out for early stopping).
TEST_SETS = {"multi30k": os.path.join(SHARED_DATA, "multi30k", "val.tsv")}
NTREX_KOR_ENG = os.path.join(SHARED_DATA, "ntrex128-kor-eng", "dev.tsv")

#: Model sizes for the real corpora (the presets are tuned for the small built-in tasks):
#: wider embeddings and more dropout, since the corpora are small for their vocabularies.
CORPUS_MODELS = {
    "seq2seq": {"embedding_dim": 256, "units": 512, "dropout": 0.3},
    "bahdanau": {"embedding_dim": 256, "units": 256, "dropout": 0.3},
    "luong": {"embedding_dim": 256, "units": 256, "dropout": 0.3},
    "transformer": {"num_layers": 2, "d_model": 256, "num_heads": 4, "d_ff": 1024,
                    "dropout": 0.3, "normalize_first": True, "tie_embeddings": True},
}
#: Their learning rates: Adam's for the RNNs, the scale of the Transformer's schedule.
CORPUS_LEARNING_RATES = {"seq2seq": 1e-3, "bahdanau": 1e-3, "luong": 1e-3, "transformer": 0.3}
#: kor-eng's levers for every family: regularization and a schedule that ends with the budget,
#: for a corpus of 4.3k pairs (what each bought: docs/RESULTS.md §6).
KOR_ENG_LEVERS = {"word_dropout": 0.1, "decay": "linear", "average_last": 5}
#: What one corpus's recipe for one family changes (TrainConfig fields; "model" for model
#: arguments), each lever measured in docs/RESULTS.md §6. Multi30k's 30 minutes buy 9-10
#: epochs, too few for dropout 0.3 to pay; the recipe adds the mean of the last 5 epochs'
#: weights, a SentencePiece unigram vocabulary, one embedding matrix for source, target and
#: output, a learning rate decaying linearly to zero at the end of the budget, word dropout.
TASK_RECIPES = {
    ("multi30k", "transformer"): {"model": {"dropout": 0.1, "share_embeddings": True},
                                  "average_last": 5, "tokenizer": "unigram",
                                  "decay": "linear", "word_dropout": 0.1},
    # label smoothing 0.2, as Sennrich & Zhang (2019) use for low-resource systems; measured on
    # the Transformer only, so the RNN families keep the default 0.1
    ("kor-eng", "transformer"): {**KOR_ENG_LEVERS, "label_smoothing": 0.2},
}
#: The RNN families take the levers that do not depend on the family: on kor-eng the
#: Transformer's (label smoothing aside, measured on the Transformer alone), on Multi30k the
#: unigram vocabulary, the decay and averaging, with dropout 0.2 (between the 0.3 of the small
#: corpus and the 0.1 that paid the Transformer here).
TASK_RECIPES.update({
    (task, arch): recipe for arch in ("seq2seq", "bahdanau", "luong") for task, recipe in (
        ("kor-eng", KOR_ENG_LEVERS),
        ("multi30k", {"model": {"dropout": 0.2}, "average_last": 5, "tokenizer": "unigram",
                      "decay": "linear"}))})


def missing(task):
    """Why `task`'s corpus cannot be used, or None when it can."""
    path = CORPORA[task]["data"]
    return None if os.path.exists(path) else f"{path} is absent"


def corpus_config(task, arch, out, budget_minutes, **overrides):
    """The training run of `arch` on corpus `task` for `budget_minutes` of wall-clock time.

    Label smoothing 0.1, batch 32; the Transformer's schedule peaks at about 1e-3
    (scale 0.3 · d^-0.5 · warmup^-0.5 with 400 warm-up steps), the RNNs use Adam at 1e-3;
    then `TASK_RECIPES`' changes for the pair, then `overrides`.
    """
    recipe = dict(TASK_RECIPES.get((task, arch), {}))
    model = {**CORPUS_MODELS[arch], **recipe.pop("model", {})}
    return TrainConfig(**{
        "arch": arch, "out": out, "epochs": 200, "early_stopping_patience": 5,
        "time_budget_minutes": budget_minutes, "label_smoothing": 0.1, "batch_size": 32,
        "warmup_steps": 400, "learning_rate": CORPUS_LEARNING_RATES[arch],
        "model": model, **CORPORA[task], **recipe, **overrides})
