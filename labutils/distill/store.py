"""Lab 02: an on-disk store of teacher targets — dense, top-k or sampled — in checksummed shards.

Offline distillation runs the teacher once, writes its next-token distributions to disk, and
trains students from the files. Each ``append`` writes one shard: a fixed header, the token ids,
then the targets. The header carries the payload length and a SHA-256 of the payload, so a
truncated or corrupted shard raises ``ShardError`` instead of feeding a student garbage.

    >>> import tempfile
    >>> store = TeacherStore(tempfile.mkdtemp(), format="topk", vocab_size=64, k=8)
    >>> tokens, teacher_logits = torch.randint(0, 64, (2, 16)), torch.randn(2, 16, 64)   # (n, T) and (n, T, V)
    >>> store.append(tokens, teacher_logits).name
    'shard-00000.bin'
    >>> tokens, indices, probs = store.read(0)          # indices is None for a dense store
    >>> tuple(indices.shape), tuple(probs.shape)
    ((2, 16, 8), (2, 16, 8))

Shard layout (little-endian): header ``<8s B B 2x I I I I Q 32s`` (HEADER_BYTES = 68) =
magic, format, dtype, vocab_size, k, n_sequences, seq_len, payload bytes, sha256(payload);
payload = tokens int32 (n·T), then dense: probs (n·T·V) | sparse: indices int32 (n·T·k), probs (n·T·k).

Left out on purpose: compression, memory-mapping, sharding across hosts, async writers — a
real store (e.g. for Gemma 3's 262k vocabulary) needs them; the byte arithmetic is the same.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from pathlib import Path

import torch

from labutils import atomic_write, positive_int
from labutils.distill.losses import sampled_targets, topk_targets

MAGIC = b"LUTSTOR1"
HEADER = struct.Struct("<8sBBxxIIIIQ32s")
HEADER_BYTES = HEADER.size  # 68
FORMATS = ("dense", "topk", "sampled")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_BYTES = 4  # int32 token ids and indices (a 262k vocabulary does not fit in int16)


class ShardError(ValueError):
    """A shard that is not a complete, intact teacher-store shard."""


def _to_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _from_bytes(buf: bytes, dtype: torch.dtype, shape) -> torch.Tensor:
    return torch.frombuffer(bytearray(buf), dtype=dtype).reshape(shape)


class TeacherStore:
    """A folder of shards ``shard-00000.bin``… holding one target format."""

    def __init__(self, root, *, format: str = "dense", vocab_size: int, k: int | None = None,
                 dtype: torch.dtype = torch.bfloat16):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        positive_int("vocab_size", vocab_size)
        if format == "dense":
            if k not in (None, vocab_size):
                raise ValueError("a dense store keeps all V probabilities; leave k=None")
            k = vocab_size
        elif isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab_size:
            raise ValueError(f"a {format} store needs k, an int in [1, vocab_size={vocab_size}], got {k!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.root, self.format, self.vocab_size, self.k, self.dtype = Path(root), format, vocab_size, k, dtype
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_seconds = self.read_seconds = 0.0  # time spent in append / read (throughput = bytes / seconds)
        self.bytes_written = self.bytes_read = 0

    @property
    def paths(self) -> list[Path]:
        return sorted(self.root.glob("shard-*.bin"))

    def __len__(self) -> int:
        return len(self.paths)

    def bytes_on_disk(self) -> int:
        return sum(os.path.getsize(p) for p in self.paths)

    def append(self, tokens: torch.Tensor, teacher_logits: torch.Tensor, *, seed: int = 0) -> Path:
        """Write one shard: tokens (n, T) and the teacher's logits (n, T, V) in this store's format.

        Pass log-probabilities as logits for a teacher you only have as probabilities (the oracle).
        ``seed`` drives the draws of a sampled store.
        """
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
            raise ValueError(f"tokens must be an integer tensor (n, T), got {getattr(tokens, 'shape', type(tokens))}")
        n, T = tokens.shape
        if not isinstance(teacher_logits, torch.Tensor) or tuple(teacher_logits.shape) != (n, T, self.vocab_size):
            raise ValueError(f"teacher_logits must have shape {(n, T, self.vocab_size)}, "
                             f"got {tuple(getattr(teacher_logits, 'shape', ()))}")
        start = time.perf_counter()
        if self.format == "dense":
            parts = [torch.softmax(teacher_logits.detach().float(), -1).to(self.dtype)]
        else:
            make = topk_targets(teacher_logits, self.k) if self.format == "topk" else \
                sampled_targets(teacher_logits, self.k, seed=seed)
            parts = [make[0].to(torch.int32), make[1].to(self.dtype)]
        payload = b"".join([_to_bytes(tokens.to(torch.int32))] + [_to_bytes(p) for p in parts])
        header = HEADER.pack(MAGIC, FORMATS.index(self.format), DTYPES.index(self.dtype), self.vocab_size, self.k,
                             n, T, len(payload), hashlib.sha256(payload).digest())
        path = self.root / f"shard-{len(self):05d}.bin"
        atomic_write(path, header + payload)  # a crash mid-write never leaves a half shard under the real name
        self.write_seconds += time.perf_counter() - start
        self.bytes_written += HEADER_BYTES + len(payload)
        return path

    def read(self, i: int):
        """Shard i as (tokens (n, T) int64, indices (n, T, k) int64 or None for dense, probs (n, T, k) float32)."""
        paths = self.paths
        if not 0 <= i < len(paths):
            raise IndexError(f"shard {i} does not exist; the store has {len(paths)}")
        start = time.perf_counter()
        path = paths[i]
        blob = path.read_bytes()
        if len(blob) < HEADER_BYTES or blob[:8] != MAGIC:
            raise ShardError(f"{path.name} is not a teacher-store shard (missing header; {len(blob)} bytes)")
        _, fmt, dt, V, k, n, T, size, digest = HEADER.unpack(blob[:HEADER_BYTES])
        payload = blob[HEADER_BYTES:]
        if len(payload) != size:
            raise ShardError(f"{path.name} is truncated: its header promises {size:,} payload bytes, "
                             f"the file holds {len(payload):,}. Rewrite this shard.")
        if hashlib.sha256(payload).digest() != digest:
            raise ShardError(f"{path.name} is corrupted: the payload's SHA-256 does not match its header. Rewrite this shard.")
        if (FORMATS[fmt], V, k, DTYPES[dt]) != (self.format, self.vocab_size, self.k, self.dtype):
            raise ShardError(f"{path.name} holds {FORMATS[fmt]} k={k} V={V} {DTYPES[dt]}, "
                             f"not this store's {self.format} k={self.k} V={self.vocab_size} {self.dtype}")
        nt = n * T * INDEX_BYTES
        tokens = _from_bytes(payload[:nt], torch.int32, (n, T)).long()
        if self.format == "dense":
            indices, values = None, payload[nt:]
        else:
            ni = n * T * k * INDEX_BYTES
            indices, values = _from_bytes(payload[nt : nt + ni], torch.int32, (n, T, k)).long(), payload[nt + ni :]
        probs = _from_bytes(values, self.dtype, (n, T, k)).float()
        self.read_seconds += time.perf_counter() - start
        self.bytes_read += len(blob)
        return tokens, indices, probs

    def throughput(self) -> dict:
        """Measured MB/s of append (target making + serialising + writing) and read (reading + verifying)."""
        return dict(write_MB_s=self.bytes_written / 1e6 / max(self.write_seconds, 1e-9),
                    read_MB_s=self.bytes_read / 1e6 / max(self.read_seconds, 1e-9))


# ----------------------------------------------------------------------------- storage arithmetic

GEMMA3_VOCAB = 262_144  # Gemma 3's vocabulary, "262k" (arXiv 2503.19786)
GEMMA3_SAMPLES = 256  # logits sampled per token for Gemma 3's distillation (arXiv 2503.19786)


def target_bytes(n_tokens: int, vocab_size: int, k: int | None, value_bytes: int) -> int:
    """Bytes of teacher targets for n_tokens: dense (k=None) n·V·b, sparse n·k·(4 + b). Headers and token ids excluded."""
    return n_tokens * (vocab_size * value_bytes if k is None else k * (INDEX_BYTES + value_bytes))
