"""Imported OPUS-MT (Marian) checkpoints against Hugging Face's own implementation.

Tiny Marian models with random weights (`MarianConfig`, `MarianMTModel`) and SentencePiece
models trained here are saved as Hugging Face checkpoints, imported through `keras-s2s import`
and compared with `MarianTokenizer` and PyTorch: token ids, logits, greedy and beam outputs,
detokenized text, and CTranslate2's own converter.
"""

import io
import json
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the reference needs PyTorch (pip install torch)")
transformers = pytest.importorskip(
    "transformers", reason="the reference needs transformers (pip install transformers)")
pytest.importorskip("safetensors", reason="checkpoints are written as safetensors")
sentencepiece = pytest.importorskip("sentencepiece")

from keras_s2s.cli import main  # noqa: E402
from keras_s2s.decoding import Beam, Greedy  # noqa: E402
from keras_s2s.inference.translator import Translator  # noqa: E402

WORDS = ("학교 에 갑니다 나는 오늘 친구 와 밥 을 먹었다 school the go home today friend ate "
         "rice we I 12 345 2026 년 월 일 hello world").split()
#: Characters neither SentencePiece model has seen (they become `<unk>`).
UNSEEN = ("😀", "漢", "ß", "Ω", "ñ")
MAX_LENGTH = 12  # the most output tokens (end included) in the decoding comparisons
WEIGHT_STD = 0.5  # random tiny models repeat one token; far from initialisation, fewer do


def _sentences(count, seed):
    """Mixed sentences: Hangul, Latin, digits, punctuation, unseen characters, emoji,
    language codes (known and not), blanks."""
    rng = random.Random(seed)
    sentences = []
    for index in range(count):
        words = rng.choices(WORDS, k=rng.randint(1, 7))
        if index % 5 == 0:
            words.insert(rng.randint(0, len(words)), rng.choice(UNSEEN))
        text = " ".join(words) + rng.choice(["", ".", "!", " ?", ","])
        if index % 7 == 0:
            text = rng.choice([">>ko<< ", ">>en<<", ">>xx<< "]) + text
        sentences.append(text)
    return sentences + ["", " ", "학교에", ">>ko<<"]


def _spm(texts, vocab_size):
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
        num_threads=1)
    return model.getvalue()


def _vocabulary(*protos, drop=()):
    """A Marian `vocab.json`: `</s>` 0, `<unk>` 1, the pieces, language codes, `<pad>` last;
    the pieces in `drop` are left out (they become `<unk>`)."""
    pieces = []
    for proto in protos:
        processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
        pieces += [processor.id_to_piece(i) for i in range(processor.get_piece_size())
                   if not (processor.is_control(i) or processor.is_unknown(i))]
    tokens = ["</s>", "<unk>", *dict.fromkeys(p for p in pieces if p not in drop),
              ">>ko<<", ">>en<<", "<pad>"]
    return {token: index for index, token in enumerate(tokens)}


def _checkpoint(directory, activation, scale_embedding, shared, seed, weight_std=WEIGHT_STD,
                tied=True):
    """Write a random tiny Marian checkpoint with its tokenizer files into `directory` (its
    weights drawn with the standard deviation `weight_std`; `tied`: the output projection is
    the target embedding, else its own `lm_head`)."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=6)) for _ in range(300)]
    source_proto, target_proto = _spm(texts, 80), _spm(texts[::-1] + ["xyz qrs"] * 20, 70)
    source_vocab = _vocabulary(source_proto, *([target_proto] if shared else []),
                               drop=("▁school",))
    files = {"source.spm": source_proto, "target.spm": target_proto}
    target_vocab = source_vocab if shared else _vocabulary(target_proto)
    # One `pad_token_id` serves both sides in Marian's configuration: `<pad>` ends both.
    size = max(len(source_vocab), len(target_vocab))
    for vocab in (source_vocab, target_vocab):
        del vocab["<pad>"]
        while len(vocab) < size - 1:
            vocab[f"<filler{len(vocab)}>"] = len(vocab)
        vocab["<pad>"] = size - 1
    config = transformers.MarianConfig(
        vocab_size=len(source_vocab), decoder_vocab_size=len(target_vocab), d_model=16,
        encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_position_embeddings=64, activation_function=activation,
        scale_embedding=scale_embedding, share_encoder_decoder_embeddings=shared,
        tie_word_embeddings=tied, pad_token_id=len(source_vocab) - 1,
        decoder_start_token_id=len(target_vocab) - 1,
        eos_token_id=0, forced_eos_token_id=None)
    torch.manual_seed(seed)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layer_norm" in name:
                parameter.add_(torch.randn_like(parameter), alpha=0.1)
            elif "embed_positions" not in name:  # fixed sinusoids, not saved
                parameter.normal_(0.0, weight_std)
        model.final_logits_bias.normal_(0.0, 1.0)
        model.final_logits_bias[0, config.eos_token_id] += 2.0  # some outputs end
        for embedding in (model.model.encoder.embed_tokens, model.model.decoder.embed_tokens):
            embedding.weight[config.pad_token_id] = 0.0  # as in OPUS-MT checkpoints
    model.save_pretrained(directory)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / "vocab.json").write_text(json.dumps(source_vocab, ensure_ascii=False))
    if not shared:
        (directory / "target_vocab.json").write_text(json.dumps(target_vocab,
                                                                ensure_ascii=False))
    (directory / "tokenizer_config.json").write_text(json.dumps({"separate_vocabs": not shared}))
    tokenizer = transformers.MarianTokenizer(
        str(directory / "source.spm"), str(directory / "target.spm"),
        str(directory / "vocab.json"),
        target_vocab_file=None if shared else str(directory / "target_vocab.json"),
        separate_vocabs=not shared)
    return model, tokenizer


VARIANTS = {  # (activation, scale_embedding, shared vocabulary)
    "swish-scaled-shared": ("swish", True, True),
    "gelu-unscaled-separate": ("gelu", False, False),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def imported(request, tmp_path_factory):
    """`(hf_model, hf_tokenizer, checkpoint_dir, run_dir, translator)` of one variant."""
    root = tmp_path_factory.mktemp(request.param)
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    model, tokenizer = _checkpoint(checkpoint, *VARIANTS[request.param],
                                   seed=list(VARIANTS).index(request.param))
    run = root / "run"
    assert main(["import", str(checkpoint), "--out", str(run), "--max-length",
                 str(MAX_LENGTH)]) == 0
    return model, tokenizer, checkpoint, run, Translator.load(str(run))


def _hf_source_ids(tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    return batch["input_ids"], batch["attention_mask"]


def _our_ids(translator, texts):
    from keras_s2s.data.pipeline import encode_source

    return encode_source(texts, translator.source_tokenizer, 10_000).numpy()


def test_token_ids_are_marian_tokenizers(imported):
    _, tokenizer, _, _, translator = imported
    texts = _sentences(300, seed=1)
    ours = _our_ids(translator, texts)
    pad = tokenizer.pad_token_id
    mismatches = [(text, [int(i) for i in row if i != pad], expected) for text, row, expected in
                  zip(texts, ours, tokenizer(texts)["input_ids"])
                  if [int(i) for i in row if i != pad] != expected]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, e.g. {mismatches[:3]}"
    assert any(tokenizer.unk_token_id in row for row in tokenizer(texts)["input_ids"])


def test_detokenization_is_marian_decode(imported):
    _, tokenizer, _, _, translator = imported
    rng = np.random.default_rng(0)
    size = translator.target_tokenizer.vocabulary_size
    ids = rng.integers(0, size, (200, 9)).astype("int32")
    ours = [text.decode() for text in translator.target_tokenizer.detokenize(ids).numpy()]
    expected = []
    for row in ids.tolist():
        row = row[:row.index(0)] if 0 in row else row  # ours stops at </s>
        expected.append(tokenizer.decode(row, skip_special_tokens=True))
    assert ours == expected


def _hf_generate(model, tokenizer, texts, **options):
    """`generate`'s outputs (without the start token, up to the end token) and scores."""
    input_ids, attention_mask = _hf_source_ids(tokenizer, texts)
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=MAX_LENGTH,
            bad_words_ids=[[model.config.pad_token_id]], forced_eos_token_id=None,
            return_dict_in_generate=True, output_scores=True, **options)
    eos = model.config.eos_token_id
    rows = [row[1:list(row).index(eos, 1) + 1].tolist() if eos in row[1:]
            else row[1:].tolist() for row in output.sequences.numpy()]
    return rows, getattr(output, "sequences_scores", None)


def _hf_greedy(model, tokenizer, texts):
    return _hf_generate(model, tokenizer, texts, num_beams=1, do_sample=False)[0]


def test_logits_match_pytorch(imported):
    model, tokenizer, _, _, translator = imported
    texts = _sentences(16, seed=2)[:16]
    input_ids, attention_mask = _hf_source_ids(tokenizer, texts)
    rng = np.random.default_rng(1)
    start = model.config.decoder_start_token_id
    decoder_ids = np.concatenate([np.full((len(texts), 1), start), rng.integers(
        0, start, (len(texts), 7))], axis=1)
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask,
                         decoder_input_ids=torch.tensor(decoder_ids)).logits.numpy()
    ours = np.asarray(translator.model((input_ids.numpy().astype("int32"),
                                        decoder_ids.astype("int32"))))
    difference = np.abs(ours - expected).max()
    print(f"max |logit difference| {difference:.2e}")
    assert difference < 1e-4


def test_greedy_matches_generate(imported):
    model, tokenizer, _, _, translator = imported
    texts = [text for text in _sentences(20, seed=3) if text.strip()][:16]
    expected = _hf_greedy(model, tokenizer, texts)
    ours = [t.output_tokens for t in translator.translate(texts, Greedy(), attention=False)]
    vocabulary = translator.target_tokenizer.vocabulary
    assert ours == [[vocabulary[i] for i in row] for row in expected]
    assert len({tuple(row) for row in expected}) > 1


def test_beam_matches_generate_without_length_penalty(imported):
    """HF ranks by log P / |Y|^length_penalty, ours by the GNMT penalty: they agree at 0
    (`Beam(alpha=0)`, `length_penalty=0`). The searches differ in one rule: HF finishes a
    hypothesis only when its end token ranks among the `num_beams` best candidates of a step,
    ours among the 2·width best, so ours may return an output HF never considers; it must then
    be more probable under the model than HF's."""
    model, tokenizer, _, _, translator = imported
    if not model.config.share_encoder_decoder_embeddings:
        pytest.skip("one variant is enough (the search does not depend on the vocabularies)")
    texts = [text for text in _sentences(16, seed=4) if text.strip()][:12]
    expected, scores = _hf_generate(model, tokenizer, texts, num_beams=4, do_sample=False,
                                    length_penalty=0.0, early_stopping=False)
    ours = translator.translate(texts, Beam(4, alpha=0.0), attention=False)
    vocabulary = translator.target_tokenizer.vocabulary
    same = [ours_.output_tokens == [vocabulary[i] for i in row]
            for ours_, row in zip(ours, expected)]
    print(f"beam 4, no length penalty: {sum(same)} of {len(texts)} identical")
    assert sum(same) >= len(texts) // 2
    for identical, ours_, score in zip(same, ours, scores.numpy()):
        assert identical or (ours_.output_tokens[-1] == "</s>" and ours_.score > score)


def test_cli_translate_gives_hf_greedy_text(imported, capsys):
    model, tokenizer, _, run, _ = imported
    if not model.config.share_encoder_decoder_embeddings:
        pytest.skip("one variant is enough (the Translator is compared on both)")
    texts = ["나는 학교 에 갑니다.", "we go home 😀", ">>ko<< 12 friend"]
    expected = [tokenizer.decode(row, skip_special_tokens=True)
                for row in _hf_greedy(model, tokenizer, texts)]
    capsys.readouterr()
    assert main(["translate", str(run), *texts]) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_ctranslate2_converter_agrees(imported, tmp_path):
    """CTranslate2's converter starts the decoder from a zero embedding (the `<pad>` row of
    OPUS-MT checkpoints) and registers one vocabulary for both sides."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    model, tokenizer, checkpoint, _, translator = imported
    if not model.config.share_encoder_decoder_embeddings:
        pytest.skip("CTranslate2's Marian converter takes one shared vocabulary")
    converted = tmp_path / "ct2"
    ctranslate2.converters.TransformersConverter(str(checkpoint)).convert(str(converted))
    texts = [text for text in _sentences(16, seed=5) if text.strip()][:12]
    sources = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(texts)["input_ids"]]
    results = ctranslate2.Translator(str(converted)).translate_batch(
        sources, beam_size=1, max_decoding_length=MAX_LENGTH, return_end_token=True)
    ours = [t.output_tokens for t in translator.translate(texts, Greedy(), attention=False)]
    same = sum(result.hypotheses[0] == tokens for result, tokens in zip(results, ours))
    print(f"CTranslate2 greedy: {same} of {len(texts)} identical")
    assert [result.hypotheses[0] for result in results] == ours


def _broken(tmp_path, imported, change):
    """A copy of the checkpoint with `change(directory)` applied."""
    import shutil

    directory = tmp_path / "broken"
    shutil.copytree(imported[2], directory)
    change(directory)
    return directory


def _edit_config(**values):
    def change(directory):
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, **values}))
    return change


def _truncate(directory):
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("change, message", [
    (lambda directory: (directory / "vocab.json").unlink(), "vocab.json is missing"),
    (_truncate, "model.safetensors is not a complete safetensors file"),
    (_edit_config(model_type="bart"), "model_type must be 'marian', got 'bart'"),
    (_edit_config(normalize_before=True), "normalize_before=true is not supported"),
    (_edit_config(add_bias_logits=True), "add_bias_logits=true is not supported"),
    (_edit_config(layernorm_embedding=True), "layernorm_embedding=true is not supported"),
], ids=["missing-vocab", "truncated-weights", "bart", "pre-norm", "bias-logits",
        "layernorm-embedding"])
def test_bad_checkpoints_exit_2_with_one_line(imported, tmp_path, capsys, change, message):
    if imported[2].parent.name.startswith("gelu"):
        pytest.skip("one variant is enough")
    source = _broken(tmp_path, imported, change)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["import", str(source), "--out", str(out), "--max-length", "12"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and message in error, error
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_hub_name_without_network_is_one_line(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # or already was
    out = tmp_path / "run"
    assert main(["import", "Helsinki-NLP/opus-mt-ko-en", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Helsinki-NLP/opus-mt-ko-en" in error
    assert not out.exists()
