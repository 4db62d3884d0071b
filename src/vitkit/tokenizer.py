"""Text tokenizers of image-text models, read from the checkpoint's own files, with the model's text rules.

The rules a text tower was trained with (lowercasing, SigLIP's punctuation stripping, the end-of-text token,
padding to a fixed length) are part of the model's text config (``TextRules``) and applied on every call, so
a caller cannot forget them. The tokenizing itself is done by ``sentencepiece`` (SigLIP's ``spiece.model``)
or ``tokenizers`` (a ``tokenizer.json``: CLIP's BPE, SigLIP 2's Gemma tokenizer).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, ConfigError

KINDS = ("sentencepiece", "tokenizers")
PADDING_SIDES = ("right", "left")
FILES = {"sentencepiece": "spiece.model", "tokenizers": "tokenizer.json"}
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class TextRules:
    """How texts become token ids for one text tower.

    ``kind``: 'sentencepiece' or 'tokenizers' (the library that reads ``file``). ``context_length``: every
    text is cut or padded to this many ids. ``lowercase`` (for 'tokenizers' a lowercasing normaliser put in
    front of the file's, as transformers' ``Siglip2Tokenizer`` does); ``canonicalize``: strip ASCII
    punctuation and collapse whitespace (SigLIP, as big_vision). ``bos_id`` / ``eos_id``: ids put before /
    after each text (None: none, or, for 'tokenizers', those the file's post-processor adds). ``pad_id``: the
    filler id; ``padding_side``: 'right' or 'left'.
    """

    kind: str = "sentencepiece"
    file: str = "spiece.model"
    context_length: int = 64
    lowercase: bool = True
    canonicalize: bool = True
    bos_id: int | None = None
    eos_id: int | None = 1
    pad_id: int = 1
    padding_side: str = "right"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"TextRules.kind={self.kind!r} is not allowed: expected one of {', '.join(KINDS)}.")
        if self.padding_side not in PADDING_SIDES:
            raise ConfigError(f"TextRules.padding_side={self.padding_side!r} is not allowed: expected one of "
                              f"{', '.join(PADDING_SIDES)}.")
        if not isinstance(self.context_length, int) or self.context_length < 2:
            raise ConfigError(f"TextRules.context_length={self.context_length!r} is not allowed: expected an "
                              "integer >= 2.")
        if Path(self.file).name != self.file:
            raise ConfigError(f"TextRules.file={self.file!r} is not allowed: expected a file name in the "
                              "model's folder, without a path.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextRules:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"TextRules field(s) {', '.join(unknown)} are not known: expected "
                              f"{', '.join(f.name for f in dataclasses.fields(cls))}.")
        return cls(**data)

    def clean(self, text: str) -> str:
        """The text as the tokenizer sees it: lowercased (here for 'sentencepiece'; by the tokenizer's own
        normaliser for 'tokenizers') and canonicalized as the rules say."""
        if self.lowercase and self.kind == "sentencepiece":
            text = text.lower()
        if self.canonicalize:
            text = _SPACES.sub(" ", text.translate(_PUNCTUATION)).strip()
        return text


class TextTokenizer:
    """Texts -> token ids (B, context_length) by ``rules``, from a tokenizer file read with its library."""

    def __init__(self, *, rules: TextRules, backend: Any, vocab_size: int) -> None:
        self.rules = rules
        self.backend = backend
        self.vocab_size = vocab_size

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], rules: TextRules) -> TextTokenizer:
        """Read ``rules.file`` from ``folder``; a missing or unreadable file is a ``CheckpointError``."""
        path = Path(folder) / rules.file
        if not path.is_file():
            raise CheckpointError(f"Tokenizer file {str(path)!r} is missing: the text tower needs its tokenizer "
                                  f"({rules.file}, {rules.kind}). Copy it from the checkpoint's original folder.")
        try:
            backend, size = _open(path, rules)
        except Exception as exc:  # the libraries raise RuntimeError, OSError, Exception for a bad file
            raise CheckpointError(f"Tokenizer file {str(path)!r} could not be read by {rules.kind} "
                                  f"({type(exc).__name__}): it is corrupt or not a {rules.kind} file. "
                                  "Copy it again from the checkpoint's original folder.") from None
        return cls(rules=rules, backend=backend, vocab_size=size)

    def encode(self, text: str) -> list[int]:
        """One text's ids: cleaned, tokenized, with the rules' start/end ids, cut to ``context_length``."""
        if not isinstance(text, str):
            raise ConfigError(f"A text to tokenize must be a string, got {type(text).__name__}.")
        r = self.rules
        cleaned = r.clean(text)
        if r.kind == "sentencepiece":
            ids = list(self.backend.encode(cleaned))
        else:  # the file's truncation keeps the start/end tokens its post-processor adds
            ids = list(self.backend.encode(cleaned).ids)
        head = [r.bos_id] if r.bos_id is not None else []
        tail = [r.eos_id] if r.eos_id is not None else []
        room = r.context_length - len(head) - len(tail)
        return head + ids[:room] + tail

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids (B, context_length), padded with ``pad_id`` on the rules' ``padding_side``."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = self.rules.context_length
        out = torch.full((len(texts), length), self.rules.pad_id, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = torch.tensor(self.encode(text), dtype=torch.long)
            if self.rules.padding_side == "left":
                out[i, length - len(ids):] = ids
            else:
                out[i, :len(ids)] = ids
        return out


def _open(path: Path, rules: TextRules) -> tuple[Any, int]:
    if rules.kind == "sentencepiece":
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor()
        sp.Load(str(path))
        return sp, int(sp.get_piece_size())
    from tokenizers import Tokenizer, normalizers

    text = path.read_text(encoding="utf-8")
    json.loads(text)  # a clear failure for a file that is not JSON at all
    tok = Tokenizer.from_str(text)
    tok.no_padding()  # padding is the rules' (length, id, side), not the file's
    tok.enable_truncation(max_length=rules.context_length)  # counts the post-processor's special tokens
    if rules.lowercase:  # in front of the file's own normaliser, as transformers' Siglip2Tokenizer puts it
        tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), *([tok.normalizer] if tok.normalizer
                                                                            else [])])
    return tok, int(tok.get_vocab_size(with_added_tokens=True))


def special_id(backend: Any, kind: str, token: str | None) -> int | None:
    """The id of a special token string in a tokenizer (None when it has none of that name)."""
    if token is None:
        return None
    if kind == "sentencepiece":
        i = backend.piece_to_id(token)
        return None if i == backend.unk_id() and token != backend.id_to_piece(i) else int(i)
    i = backend.token_to_id(token)
    return None if i is None else int(i)
