"""Penn Treebank (Mikolov's word-level language-modelling version) reader, batchify and get_batch.

Spec §3.4/§3.5: PTB word level with a 10k vocabulary, ``<eos>`` appended to every line. The vocabulary is built
from the training split in first-seen order (as DARTS / AWD-LSTM ``data.Corpus`` do), so ids match the reference.
torchtext is deliberately not used: its last release pins an old torch and fails to import on current ones.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eps.data.files import note_read
from eps.errors import DataError

EOS = "<eos>"

#: split -> (path relative to the data root, md5 of the file).
PTB_FILES: dict[str, tuple[str, str]] = {
    "train": ("ptb/train.txt", "f26c4b92c5fdc7b3f8c7cdcb991d8420"),
    "valid": ("ptb/valid.txt", "aa0affc06ff7c36e977d7cd49e3839bf"),
    "test": ("ptb/test.txt", "8b80168b89c18661a38ef683c0dc3721"),
}

_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)
class Corpus:
    """A tokenised PTB: ``vocab[i]`` is the word with id ``i``; each split is a 1-D int64 stream of ids."""

    vocab: list[str]
    word_to_id: dict[str, int]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    def __len__(self) -> int:
        return len(self.vocab)


def _md5(path: Path) -> str:
    note_read(path)
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_words(path: Path) -> list[str]:
    """All tokens of the file, ``<eos>`` after every line (equivalent to ``line.split() + ['<eos>']`` per line)."""
    note_read(path)
    try:
        with open(path, encoding="utf-8") as f:  # universal newlines: \r\n and \r become \n
            text = f.read()
    except UnicodeDecodeError as err:
        raise DataError(
            f"PTB file {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
            f"re-download Mikolov's PTB (simple-examples ptb.*.txt)"
        ) from None
    except OSError as err:
        raise DataError(f"cannot read PTB file {path}: {err.strerror}; check the file's permissions") from None
    if text and not text.endswith("\n"):
        text += "\n"
    return text.replace("\n", f" {EOS} ").split()


def _oov_location(path: Path, word_to_id: dict[str, int]) -> tuple[int, str]:
    """Slow path, only after a failed lookup: the 1-based line number and the first unknown word."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            for word in line.split():
                if word not in word_to_id:
                    return number, word
    raise AssertionError(f"no out-of-vocabulary word found in {path}")  # pragma: no cover


def _encode(words: list[str], word_to_id: dict[str, int], path: Path) -> torch.Tensor:
    try:
        ids = list(map(word_to_id.__getitem__, words))
    except KeyError:
        number, word = _oov_location(path, word_to_id)
        raise DataError(
            f"PTB file {path}, line {number}: word {word!r} is not in the training vocabulary; "
            f"use Mikolov's preprocessed PTB (simple-examples ptb.*.txt), whose splits share one 10k vocabulary"
        ) from None
    return torch.from_numpy(np.array(ids, dtype=np.int64))


def _resolve(data_root: Path, split: str, verify: bool) -> Path:
    relative, expected = PTB_FILES[split]
    path = data_root / relative
    if not path.is_file():
        raise DataError(
            f"PTB {split} file not found at {path}; set EPS_DATA_DIR (or the data root) to the folder "
            f"that holds {relative}"
        )
    if verify:
        got = _md5(path)
        if got != expected:
            raise DataError(
                f"PTB {split} file {path} is corrupt: md5 {got}, expected {expected}; re-download Mikolov's "
                f"PTB (simple-examples ptb.{split}.txt) to {path}"
            )
    return path


def load_ptb(data_root: str | os.PathLike[str], verify: bool = True) -> Corpus:
    """Read ``<data_root>/ptb/{train,valid,test}.txt``; with ``verify`` check each file's md5 first.

    Raises :class:`~eps.errors.DataError` for a missing or corrupt file, or a valid/test word absent from train.
    """
    root = Path(data_root).expanduser()
    paths = {split: _resolve(root, split, verify) for split in PTB_FILES}

    train_words = _read_words(paths["train"])
    vocab = list(dict.fromkeys(train_words))  # first-seen order
    word_to_id = {word: i for i, word in enumerate(vocab)}
    streams = {"train": _encode(train_words, word_to_id, paths["train"])}
    del train_words
    for split in ("valid", "test"):
        streams[split] = _encode(_read_words(paths[split]), word_to_id, paths[split])
    return Corpus(vocab=vocab, word_to_id=word_to_id, **streams)


def batchify(tokens: torch.Tensor, n_columns: int) -> torch.Tensor:
    """Cut a 1-D stream into ``n_columns`` contiguous stretches: result ``[rows, n_columns]``, column j = stretch j.

    The tail that does not fill a whole row is dropped (``data.view(bsz, -1).t().contiguous()`` of DARTS/AWD-LSTM).
    """
    if tokens.dim() != 1:
        raise ValueError(f"batchify expects a 1-D token stream, got shape {tuple(tokens.shape)}")
    if n_columns < 1:
        raise ValueError(f"batchify needs n_columns >= 1, got {n_columns}")
    rows = tokens.numel() // n_columns
    return tokens[: rows * n_columns].view(n_columns, rows).t().contiguous()


def get_batch(source: torch.Tensor, position: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[position, position + n)`` as inputs and the next-token rows as targets, both ``[n, columns]``.

    ``n = min(seq_len, rows - 1 - position)`` as in AWD-LSTM/DARTS; targets are not flattened (DARTS RNN style).
    """
    rows = source.size(0)
    if not 0 <= position < rows - 1:
        raise ValueError(f"get_batch position {position} out of range for a source of {rows} rows")
    if seq_len < 1:
        raise ValueError(f"get_batch needs seq_len >= 1, got {seq_len}")
    n = min(seq_len, rows - 1 - position)
    return source[position : position + n], source[position + 1 : position + 1 + n]
