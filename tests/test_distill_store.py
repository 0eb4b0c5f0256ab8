"""TeacherStore: exact round trips, bytes on disk against the layout's arithmetic, damage detected."""

import os

import pytest
import torch

from labutils.checks import CheckFailed
from labutils.distill import ShardError, TeacherStore, check_target_bytes, sampled_targets, target_bytes, topk_targets

N, T, V = 3, 16, 64


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(N, T, V, generator=g) * 3
    logits[0, 0, :10] = float("-inf")  # banned tokens survive the trip
    return torch.randint(0, V, (N, T), generator=g), logits


def expected_file_size(n_tokens, V, k, value_bytes, sparse):
    """Written from the documented layout, not from the writer: 68-byte header
    (8 magic + 1 + 1 + 2 pad + 4·4 + 8 + 32 sha256), int32 token ids, then the targets."""
    header = 8 + 1 + 1 + 2 + 4 * 4 + 8 + 32
    per_token = 4 + (k * (4 + value_bytes) if sparse else V * value_bytes)
    return header + n_tokens * per_token


@pytest.mark.parametrize("dtype,value_bytes", [(torch.float32, 4), (torch.float16, 2), (torch.bfloat16, 2)])
@pytest.mark.parametrize("fmt,k", [("dense", None), ("topk", 8), ("sampled", 16)])
def test_round_trip_and_bytes(tmp_path, batch, fmt, k, dtype, value_bytes):
    tokens, logits = batch
    store = TeacherStore(tmp_path, format=fmt, vocab_size=V, k=k, dtype=dtype)
    for seed in range(2):
        store.append(tokens, logits, seed=seed)
    assert len(store) == 2
    for seed in range(2):
        got_tokens, idx, probs = store.read(seed)
        assert torch.equal(got_tokens, tokens)
        if fmt == "dense":
            want_idx, want = None, torch.softmax(logits, -1)
        else:
            want_idx, want = (topk_targets(logits, k) if fmt == "topk" else sampled_targets(logits, k, seed=seed))
            assert torch.equal(idx, want_idx)
        assert torch.equal(probs, want.to(dtype).float())  # exact: the only loss is the cast to the value dtype
    sizes = [os.path.getsize(p) for p in store.paths]
    want_size = expected_file_size(N * T, V, k, value_bytes, fmt != "dense")
    assert sizes == [want_size, want_size] and store.bytes_on_disk() == 2 * want_size
    assert target_bytes(N * T, V, k, value_bytes) == want_size - 68 - 4 * N * T


def test_truncated_shard_is_detected(tmp_path, batch):
    store = TeacherStore(tmp_path, format="topk", vocab_size=V, k=4)
    path = store.append(*batch)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 7)
    with pytest.raises(ShardError, match="truncated"):
        store.read(0)
    with open(path, "r+b") as f:
        f.truncate(20)  # not even a header left
    with pytest.raises(ShardError, match="not a teacher-store shard"):
        store.read(0)


def test_corrupted_shard_is_detected(tmp_path, batch):
    store = TeacherStore(tmp_path, format="dense", vocab_size=V)
    path = store.append(*batch)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one flipped bit in the payload
    path.write_bytes(bytes(blob))
    with pytest.raises(ShardError, match="corrupted"):
        store.read(0)
    assert issubclass(ShardError, ValueError)


def test_shard_of_another_format_is_refused(tmp_path, batch):
    TeacherStore(tmp_path, format="topk", vocab_size=V, k=4).append(*batch)
    with pytest.raises(ShardError, match="not this store"):
        TeacherStore(tmp_path, format="topk", vocab_size=V, k=8).read(0)


def test_throughput_is_measured(tmp_path, batch):
    store = TeacherStore(tmp_path, format="dense", vocab_size=V)
    store.append(*batch)
    store.read(0)
    tp = store.throughput()
    assert store.bytes_written == store.bytes_read == store.bytes_on_disk()
    assert tp["write_MB_s"] > 0 and tp["read_MB_s"] > 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(format="zip", vocab_size=V), "format"),
    (dict(format="topk", vocab_size=V), "needs k"),
    (dict(format="topk", vocab_size=V, k=V + 1), "needs k"),
    (dict(format="dense", vocab_size=0), "vocab_size"),
    (dict(format="dense", vocab_size=V, dtype=torch.int8), "dtype"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TeacherStore(tmp_path, **kwargs)


def test_bad_append_shapes(tmp_path, batch):
    tokens, logits = batch
    store = TeacherStore(tmp_path, format="dense", vocab_size=V)
    with pytest.raises(ValueError, match="teacher_logits must have shape"):
        store.append(tokens, logits[..., :10])
    with pytest.raises(ValueError, match="tokens must be"):
        store.append(tokens.float(), logits)


def test_target_bytes_checker(capsys):
    check_target_bytes(target_bytes)
    assert "512 KiB/token" in capsys.readouterr().out  # 262,144 × 2 B (Gemma 3, arXiv 2503.19786: a 262k vocabulary)
    with pytest.raises(CheckFailed):
        check_target_bytes(lambda n, V, k, b: n * (V if k is None else k) * b)  # forgot the indices
