import dataclasses
import os
import shutil
from pathlib import Path

import pytest
import torch

from eps.data.ptb import PTB_FILES, Corpus, batchify, get_batch, load_ptb
from eps.errors import DataError, EpsError

pytestmark = pytest.mark.unit

DATA_ROOT = Path(os.environ.get("EPS_DATA_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
needs_ptb = pytest.mark.skipif(
    not all((DATA_ROOT / rel).is_file() for rel, _ in PTB_FILES.values()),
    reason=f"PTB files not found under {DATA_ROOT} (set EPS_DATA_DIR)",
)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load_ptb(DATA_ROOT)


def write_ptb(root: Path, train: str, valid: str, test: str) -> Path:
    (root / "ptb").mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (root / PTB_FILES[split][0]).write_text(text)
    return root


# --- real data ------------------------------------------------------------------------------------------------


@needs_ptb
def test_token_counts_and_vocab(corpus):
    assert corpus.train.numel() == 929_589
    assert corpus.valid.numel() == 73_760
    assert corpus.test.numel() == 82_430
    assert len(corpus.vocab) == 10_000 == len(corpus)
    for stream in (corpus.train, corpus.valid, corpus.test):
        assert stream.dtype == torch.int64 and stream.dim() == 1
        assert int(stream.min()) >= 0 and int(stream.max()) < 10_000
    assert corpus.word_to_id == {w: i for i, w in enumerate(corpus.vocab)}
    assert "<eos>" in corpus.word_to_id and "<unk>" in corpus.word_to_id


@needs_ptb
def test_first_seen_order_and_eos(corpus):
    first_line = (DATA_ROOT / PTB_FILES["train"][0]).read_text().split("\n", 1)[0].split()
    n = len(first_line)
    assert [corpus.vocab[i] for i in corpus.train[:n].tolist()] == first_line
    assert corpus.vocab[int(corpus.train[n])] == "<eos>"
    assert corpus.vocab[int(corpus.train[-1])] == "<eos>"
    # ids of the first line's distinct words are 0, 1, 2, ... in order of appearance
    assert corpus.vocab[: len(dict.fromkeys(first_line))] == list(dict.fromkeys(first_line))


@needs_ptb
def test_spec_shapes(corpus):
    # §3.4: 128 training columns of 7,262 rows; §3.5: 1,024 validation columns of 72 tokens
    assert batchify(corpus.train, 128).shape == (7262, 128)
    assert batchify(corpus.valid, 1024).shape == (72, 1024)


# --- batchify / get_batch -------------------------------------------------------------------------------------


def test_batchify_columns_are_contiguous_stretches():
    tokens = torch.arange(23)
    data = batchify(tokens, 4)
    assert data.shape == (5, 4)
    assert data.is_contiguous()
    assert data.dtype == tokens.dtype
    for j in range(4):
        assert data[:, j].tolist() == list(range(5 * j, 5 * j + 5))  # tail 20..22 dropped
    assert torch.equal(data, tokens[:20].view(4, -1).t())


def test_batchify_rejects_bad_input():
    with pytest.raises(ValueError):
        batchify(torch.arange(10), 0)
    with pytest.raises(ValueError):
        batchify(torch.zeros(2, 3, dtype=torch.long), 2)


def test_get_batch_shift_and_clip():
    source = batchify(torch.arange(40), 4)  # 10 rows
    inputs, targets = get_batch(source, 0, 3)
    assert inputs.shape == targets.shape == (3, 4)
    assert torch.equal(targets, source[1:4])
    assert torch.equal(targets, inputs + 1)  # within a column the stream is consecutive
    # clipped to rows - 1 - position
    inputs, targets = get_batch(source, 7, 35)
    assert inputs.shape == (2, 4)
    assert torch.equal(inputs, source[7:9]) and torch.equal(targets, source[8:10])
    inputs, targets = get_batch(source, 8, 35)
    assert inputs.shape == (1, 4)
    with pytest.raises(ValueError):
        get_batch(source, 9, 35)


# --- errors ---------------------------------------------------------------------------------------------------


@needs_ptb
def test_md5_mismatch(tmp_path):
    shutil.copytree(DATA_ROOT / "ptb", tmp_path / "ptb")
    with open(tmp_path / PTB_FILES["valid"][0], "ab") as f:
        f.write(b" the <eos>\n")
    with pytest.raises(DataError) as info:
        load_ptb(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "valid.txt" in message and PTB_FILES["valid"][1] in message
    assert "re-download" in message and "ptb.valid.txt" in message
    assert isinstance(info.value, EpsError)
    # without verification the altered (still in-vocabulary) file loads
    assert load_ptb(tmp_path, verify=False).valid.numel() > 73_760


def test_missing_file(tmp_path):
    write_ptb(tmp_path, "a b\n", "a\n", "b\n")
    (tmp_path / PTB_FILES["test"][0]).unlink()
    with pytest.raises(DataError) as info:
        load_ptb(tmp_path, verify=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "ptb" / "test.txt") in message and "EPS_DATA_DIR" in message


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="EPS_DATA_DIR"):
        load_ptb(tmp_path / "nowhere")


def test_oov_word_in_valid(tmp_path):
    write_ptb(tmp_path, "the cat sat\non the mat\n", "the cat\nthe dog sat\n", "the mat\n")
    with pytest.raises(DataError) as info:
        load_ptb(tmp_path, verify=False)
    message = str(info.value)
    assert "\n" not in message
    assert "valid.txt" in message and "line 2" in message and "'dog'" in message


def test_small_corpus(tmp_path):
    write_ptb(tmp_path, " the cat sat \n\non the mat", "the cat\n", "mat on\n")
    corpus = load_ptb(tmp_path, verify=False)
    assert corpus.vocab == ["the", "cat", "sat", "<eos>", "on", "mat"]
    assert corpus.train.tolist() == [0, 1, 2, 3, 3, 4, 0, 5, 3]  # empty line -> lone <eos>; last line gets one
    assert corpus.valid.tolist() == [0, 1, 3]
    assert corpus.test.tolist() == [5, 4, 3]
    with pytest.raises(dataclasses.FrozenInstanceError):
        corpus.vocab = []  # frozen
