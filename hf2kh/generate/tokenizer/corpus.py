"""Sample corpus for verification: texts on which a port's ids must equal HF's."""

from __future__ import annotations

_CORPUS = (
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "It's 12345 and 3.14, they'd say; we'll see, YOU'RE RIGHT, I'M sure it'S fine.",
    "Café naïve résumé façade, São Paulo, Zürich; Ångström. Straße, Größe, ΟΔΟΣ.",
    "Decomposed accents: e\u0301 a\u0300 n\u0303 u\u0308 (NFC and NFD differ).",
    "中文测试：你好，世界！日本語のテキスト。한국어 텍스트입니다.",
    "Emoji 😀🎉👍🏽 family 👨\u200d👩\u200d👧 flags 🇺🇸🇯🇵 heart ❤️ done.",
    "   leading spaces, runs    of     spaces, trailing   ",
    "tabs\tand\t\ttabs\nnew\nlines\n\n\nblank lines\r\nand windows\r\n",
    "def square(x: int) -> int:\n    return x ** 2  # power\n\n\nclass A:\n    pass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }  /* C */ if (x && !y || z) return;",
    'const s = `${a}+${b}`; console.log(s === "3"); // done',
    "Numbers: 0 7 42 123 1234 12345 123456 3.14159 -2.5e-10 1,000,000 0x1F 007",
    "Mixed123abc ABC123 a1b2c3 2024-01-31T12:00:00Z v1.2.3",
    "Punctuation!!! ??? ... --- ((brackets)) [[x]] {{y}} <tag attr='1'/> @#$%^&*",
    "Greek Καλημέρα κόσμε, Cyrillic Привет мир, Arabic مرحبا بالعالم, Hebrew שלום.",
    "Special spaces: a\u00a0b\u2009c\u3000d zero\u200bwidth soft\u00adhyphen end",
    "Controls: \x07bell \x1b[0m escape and \ufffd replacement and \ue000 private use",
    "Ligatures ﬁ ﬂ, fullwidth ＡＢＣ１２３, superscript x² and circled ①.",
    "ALLCAPS WORDS and lowercase and MiXeD CaSe and SHOUTING'S END",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D",
    "URLs https://example.com/path?q=1&r=2#frag and e-mails a.b@c.de",
    "Supercalifragilisticexpialidocious " + "abc" * 40,
    "ไม่มีการเว้นวรรคในภาษาไทยเลยแม้แต่นิดเดียวครับผมคิดว่านะครับ",
    "Unknown script: ᚠᛇᚻ᛫ᛒᛦᚦ and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math and 𪜀 rare CJK.",
    "",
    " ",
    "\n",
    "a",
    "  x",
    "9",
)

# Special-token strings common in real checkpoints: embedded in text, they must be recognized only
# when the tokenizer has them (elsewhere they are ordinary characters).
_COMMON_SPECIALS = (
    "<|endoftext|>",
    "<s>",
    "</s>",
    "<unk>",
    "<pad>",
    "<bos>",
    "<eos>",
    "<mask>",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "<start_of_turn>",
    "<|im_start|>",
)


def tokenizer_test_corpus(special_tokens=()) -> list[str]:
    """Texts for comparing a port's token ids with HF's.

    Unicode (accents, composed and decomposed, CJK, emoji with joiners, rare scripts), whitespace
    runs, tabs, newlines, CRLF, numbers, source code, odd spaces and control characters, empty and
    tiny strings, a very long word, and special tokens embedded in sentences: the common ones and
    each of `special_tokens` (at the start, in the middle with and without spaces, at the end,
    doubled).
    """
    texts = list(_CORPUS)
    texts.append("Before <|endoftext|> after, <s> and </s>, [SEP] and [CLS] and <bos> here.")
    texts.append("<s>Starts with one. <mask> and <start_of_turn>user\nhi<eos>")
    for token in dict.fromkeys([*_COMMON_SPECIALS, *special_tokens]):
        texts.extend(
            [
                f"Hello {token} world",
                f"{token}Hello",
                f" {token} x",
                f"end{token}",
                f"{token}{token} twice\n{token}",
            ]
        )
    return texts
