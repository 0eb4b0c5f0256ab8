"""online_softmax and flash_attention against torch; the simulator's counts against hand-derived formulas."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labutils import kernels
from labutils.kernels import fastmem
from labutils.kernels.fastmem import FastMemory, FastMemoryFull


def sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(*(torch.from_numpy(t) for t in (q, k, v)), is_causal=causal).numpy()


@pytest.mark.parametrize("n,block", [(1, 4), (10, 3), (64, 16), (65, 16), (7, 100)])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_online_softmax_matches_torch(n, block, scale):
    x = np.random.default_rng(n).standard_normal((3, 4, n)) * scale
    got = kernels.online_softmax(x, block_size=block)
    np.testing.assert_allclose(got, torch.softmax(torch.from_numpy(x), -1).numpy(), rtol=1e-10, atol=1e-14)
    # another axis, and float32 stays float32
    np.testing.assert_allclose(kernels.online_softmax(x, axis=0, block_size=2), torch.softmax(torch.from_numpy(x), 0).numpy(), rtol=1e-10)
    assert kernels.online_softmax(x.astype(np.float32), block_size=block).dtype == np.float32


def test_online_softmax_masked_rows():
    x = np.random.default_rng(0).standard_normal((4, 12))
    x[0, 5:] = -np.inf  # partly masked, whole blocks of -inf
    x[1, :] = -np.inf  # fully masked: nan, like torch
    got = kernels.online_softmax(x, block_size=4)
    want = torch.softmax(torch.from_numpy(x), -1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, equal_nan=True)
    assert np.isnan(got[1]).all()


def test_merge_is_associative_and_commutative():
    rng = np.random.default_rng(1)
    blocks = [rng.standard_normal(rng.integers(1, 9)) * 30 for _ in range(6)] + [np.array([-np.inf])]
    stats = [(b.max(), np.exp(b - b.max()).sum()) if np.isfinite(b.max()) else (b.max(), 0.0) for b in blocks]
    full = np.concatenate(blocks)
    want = (full.max(), np.exp(full - full.max()).sum())
    for perm in itertools.islice(itertools.permutations(range(len(stats))), 0, 5040, 97):
        order = [stats[i] for i in perm]
        left = order[0]
        for s in order[1:]:
            left = kernels.merge_softmax_stats(left, s)
        tree = [kernels.merge_softmax_stats(order[i], order[i + 1]) for i in range(0, 6, 2)] + [order[6]]
        while len(tree) > 1:
            tree = [kernels.merge_softmax_stats(tree[0], tree[1])] + tree[2:]
        for got in (left, tree[0]):
            assert got[0] == want[0] and got[1] == pytest.approx(want[1], rel=1e-12)


@pytest.mark.parametrize("T,block", [(1, 64), (8, 4), (37, 16), (64, 64), (100, 32)])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attention_matches_sdpa(T, block, causal):
    rng = np.random.default_rng(T)
    q, k, v = (rng.standard_normal((2, 3, T, 16)) for _ in range(3))
    q *= 20  # large scores
    got = kernels.flash_attention(q, k, v, block_size=block, causal=causal)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, sdpa(q, k, v, causal), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(kernels.attention_reference(q, k, v, causal=causal), sdpa(q, k, v, causal), rtol=1e-9, atol=1e-12)


def test_flash_attention_float32_and_cross_attention():
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((9, 8)).astype(np.float32), rng.standard_normal((9, 4)).astype(np.float32)
    got = kernels.flash_attention(q, k, v, block_size=4)
    assert got.dtype == np.float32 and got.shape == (5, 4)
    np.testing.assert_allclose(got, sdpa(q, k, v, False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad,match", [
    (dict(q=np.zeros((4, 8)), k=np.zeros((4, 6)), v=np.zeros((4, 6))), "head dim"),
    (dict(q=np.zeros((4, 8)), k=np.zeros((4, 8)), v=np.zeros((5, 8))), "k and v"),
    (dict(q=np.full((4, 8), np.nan), k=np.zeros((4, 8)), v=np.zeros((4, 8))), "nan"),
    (dict(q=np.zeros(8), k=np.zeros((4, 8)), v=np.zeros((4, 8))), "shape"),
])
def test_flash_attention_bad_inputs(bad, match):
    with pytest.raises(ValueError, match=match):
        kernels.flash_attention(**bad)


def test_bad_block_sizes_and_values():
    for bs in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="block_size"):
            kernels.online_softmax(np.zeros(4), block_size=bs)
        with pytest.raises(ValueError, match="block_size"):
            kernels.flash_attention(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), block_size=bs)
    with pytest.raises(ValueError, match="nan"):
        kernels.online_softmax(np.array([1.0, np.nan]))
    assert kernels.memory_passes(2, fused=False) == 4 and kernels.memory_passes(2, fused=True) == 2


@pytest.mark.parametrize("m,k,n,tile", [(4, 4, 4, 2), (10, 7, 9, 3), (8, 8, 8, 8), (5, 3, 1, 4)])
def test_matmul_simulator_counts_match_formulas(m, k, n, tile):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    mem = FastMemory(3 * tile * tile)
    np.testing.assert_allclose(fastmem.tiled_matmul_sim(mem, A, B, tile), A @ B)
    assert dict(reads=mem.reads, writes=mem.writes) == fastmem.tiled_matmul_traffic(m, k, n, tile)
    assert mem.peak <= mem.capacity and mem.used == 0
    mem = FastMemory(2 * k + 1)
    np.testing.assert_allclose(fastmem.naive_matmul_sim(mem, A, B), A @ B)
    assert dict(reads=mem.reads, writes=mem.writes) == fastmem.naive_matmul_traffic(m, k, n)
    # hand count for 4×4 with tile 2: 4 C blocks × 2 steps × 2 blocks of 4 words = 64 reads
    assert fastmem.tiled_matmul_traffic(4, 4, 4, 2) == dict(reads=64, writes=16)


def test_simulator_refuses_overflow_and_bad_capacity():
    mem = FastMemory(10)
    mem.load(np.zeros(8))
    with pytest.raises(FastMemoryFull, match="full"):
        mem.load(np.zeros(3))
    with pytest.raises(ValueError, match="capacity"):
        FastMemory(0)
    assert [fastmem.best_tile_size(M) for M in (3, 11, 12, 300)] == [1, 1, 2, 10]


def test_attention_in_simulator_is_exact_and_scales_as_theorem_2():
    rng = np.random.default_rng(0)
    d, M = 16, 4096
    traffic = {}
    for N in (64, 128, 256):
        q, k, v = (rng.standard_normal((N, d)) for _ in range(3))
        std, fl = FastMemory(M), FastMemory(M)
        ref = kernels.attention_reference(q, k, v)
        np.testing.assert_allclose(fastmem.standard_attention_sim(std, q, k, v), ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fastmem.flash_attention_sim(fl, q, k, v), ref, rtol=1e-10, atol=1e-12)
        assert std.peak <= M and fl.peak <= M
        traffic[N] = (std.traffic, fl.traffic)
    assert all(s > f for s, f in traffic.values())
    # both grow ≈ 4× per doubling of N once N² dominates
    assert 3.0 < traffic[256][0] / traffic[128][0] < 4.5 and 3.0 < traffic[256][1] / traffic[128][1] < 4.5
    # flash traffic falls ≈ 1/M: 4× the fast memory, ≈ 4× fewer words (Theorem 2: Θ(N²d²/M))
    q, k, v = (rng.standard_normal((256, d)) for _ in range(3))
    big = FastMemory(4 * M)
    fastmem.flash_attention_sim(big, q, k, v)
    assert 2.5 < traffic[256][1] / big.traffic < 4.5


def test_compile_demo_reports_a_timeout_in_words():
    res = kernels.compile_demo(1024, timeout_s=0.5)
    assert res["ok"] is False and "did not finish within" in res["reason"]


# ----------------------------------------------------------------------------- the checkers catch shortcuts


def _blockwise_softmax(x, block_size):
    m, d = np.full(x.shape[:-1], -np.inf), np.zeros(x.shape[:-1])
    for s in range(0, x.shape[-1], block_size):
        blk = x[..., s:s + block_size]
        m_blk = blk.max(axis=-1)
        m, d = kernels.merge_softmax_stats((m, d), (m_blk, np.exp(blk - np.where(np.isneginf(m_blk), 0.0, m_blk)[..., None]).sum(-1)))
    out = np.empty_like(x)
    with np.errstate(invalid="ignore"):  # a fully masked row is nan, like torch
        for s in range(0, x.shape[-1], block_size):
            out[..., s:s + block_size] = np.exp(x[..., s:s + block_size] - m[..., None]) / d[..., None]
    return out


def test_checkers_refuse_whole_array_answers(capsys):
    from labutils.checks import CheckFailed
    from labutils.kernels import check_flash_attention, check_merge_softmax_stats, check_online_softmax

    check_online_softmax(_blockwise_softmax)  # reads blocks: passes
    check_flash_attention(_flash_blocks)
    full_softmax = lambda x, block_size: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
    with pytest.raises(CheckFailed), np.errstate(invalid="ignore"):
        check_online_softmax(full_softmax)  # right numbers, whole rows at once
    with pytest.raises(CheckFailed):
        check_flash_attention(lambda q, k, v, block_size, causal: kernels.attention_reference(q, k, v, causal=causal))
    assert "read 100 positions" in capsys.readouterr().out

    def naive_merge(a, b):  # no −inf handling: (−inf, 0) + (−inf, 0) gives nan
        m = np.maximum(a[0], b[0])
        return m, a[1] * np.exp(a[0] - m) + b[1] * np.exp(b[0] - m)

    with np.errstate(invalid="ignore"), pytest.raises(CheckFailed):
        check_merge_softmax_stats(naive_merge)
    check_merge_softmax_stats(kernels.merge_softmax_stats)


def _flash_blocks(q, k, v, block_size, causal):
    """The notebook's solution shape: only ever slices block_size rows of q, k, v."""
    T, d = q.shape[-2], q.shape[-1]
    out = np.empty_like(q)
    for i in range(0, T, block_size):
        q_i = q[..., i:i + block_size, :] / np.sqrt(d)
        rows = np.arange(i, min(i + block_size, T))[:, None]
        m, l, acc = np.full(q_i.shape[:-1], -np.inf), np.zeros(q_i.shape[:-1]), np.zeros(q_i.shape)
        for j in range(0, T, block_size):
            if causal and j > rows.max():
                break
            s = q_i @ np.swapaxes(k[..., j:j + block_size, :], -1, -2)
            if causal:
                s = np.where(np.arange(j, min(j + block_size, T))[None, :] <= rows, s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1))
            p, alpha = np.exp(s - m_new[..., None]), np.exp(m - m_new)
            l, acc, m = alpha * l + p.sum(-1), alpha[..., None] * acc + p @ v[..., j:j + block_size, :], m_new
        out[..., i:i + block_size, :] = acc / l[..., None]
    return out


def test_block_reader_extents():
    from labutils.kernels import BlockReader

    x = np.arange(2 * 10 * 3, dtype=float).reshape(2, 10, 3)
    r = BlockReader(x, -2)
    assert np.empty_like(r).shape == x.shape and r.shape[-2] == 10 and r.log == []  # shape and allocation read nothing
    np.testing.assert_array_equal(r[..., 2:6, :], x[..., 2:6, :])
    np.testing.assert_array_equal(r.swapaxes(-1, -2)[..., 7:9], x[..., 7:9, :].swapaxes(-1, -2))  # a view, then 2 rows
    assert r.log == [4, 2]
    (r * 2, r.max(), np.asarray(r))
    assert r.log[2:] == [10, 10, 10]


def test_streamed_schedule_moves_sqrt3_less_than_square_tiles():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((96, 96)), rng.standard_normal((96, 96))
    for M in (48, 192, 768):
        st, sq = FastMemory(M), FastMemory(M)
        np.testing.assert_allclose(fastmem.streamed_matmul_sim(st, A, B), A @ B)
        np.testing.assert_allclose(fastmem.tiled_matmul_sim(sq, A, B, fastmem.best_tile_size(M)), A @ B)
        b = fastmem.streamed_tile_size(M)
        assert b * b + 2 * b <= M < (b + 1) ** 2 + 2 * (b + 1) and st.peak <= M and st.used == 0
        assert dict(reads=st.reads, writes=st.writes) == fastmem.tiled_matmul_traffic(96, 96, 96, b)
        assert 1.25 < sq.reads / st.reads < 1.8  # → √3 as M grows; integer b makes steps
    with pytest.raises(ValueError, match="too small"):
        fastmem.streamed_matmul_sim(FastMemory(2), A, B)


def test_fa1_and_fa2_orders_count_what_dao_2023_says():
    rng = np.random.default_rng(1)
    N, d, M, blk = 256, 16, 4096, 32
    q, k, v = (rng.standard_normal((N, d)) for _ in range(3))
    ref = kernels.attention_reference(q, k, v)
    fa1, fa2 = FastMemory(M), FastMemory(M)
    O1 = fastmem.flash_attention_sim(fa1, q, k, v, block_rows=blk, block_cols=blk)
    O2 = fastmem.flash_attention2_sim(fa2, q, k, v, block_rows=blk, block_cols=blk)
    np.testing.assert_allclose(O1, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(O2, ref, rtol=1e-10, atol=1e-12)
    passes = N // blk
    assert fa1.moved(k) == (N * d, 0) and fa1.moved(q) == (passes * N * d, 0)
    assert fa1.moved(O1) == (passes * N * d, passes * N * d)  # O read and rewritten once per key block
    assert fa2.moved(q) == (N * d, 0) and fa2.moved(k) == (passes * N * d, 0)
    assert fa2.moved(O2) == (0, N * d)  # written once
    assert fa2.writes == N * d + N  # O and the log-sum-exp L


def test_decode_ops_per_op_bounds():
    from labutils import hardware as hw
    from labutils.kernels import decode

    assert decode.MHA_LLAMA_8B.kv_bytes_per_token(2) == hw.kv_bytes_per_token(32, 32, 128, 2)
    assert decode.GQA_LLAMA_8B.kv_bytes_per_token(2) == hw.kv_bytes_per_token(32, 8, 128, 2)
    assert decode.MLA_DEEPSEEK_V3.kv_bytes_per_token(2) == 61 * 576 * 2
    one = decode.decode_ops(hw.H100_SXM, 8e9, 4096, decode.GQA_LLAMA_8B, 1, 0)
    assert one["weight matmuls"]["regime"] == "memory" and one["weight matmuls"]["time_s"] == pytest.approx(16e9 / 3.35e12)
    big = decode.decode_ops(hw.H100_SXM, 8e9, 4096, decode.GQA_LLAMA_8B, 512, 512)
    assert big["weight matmuls"]["regime"] == "compute" and big["attention (KV cache)"]["regime"] == "memory"
    assert big["sum"]["time_s"] > big["aggregate"]["time_s"]  # per-op bounds are tighter once regimes differ
    assert big["attention (KV cache)"]["intensity"] == pytest.approx(decode.GQA_LLAMA_8B.intensity(2), rel=1e-9)
    with pytest.raises(ValueError, match="batch"):
        decode.decode_ops(hw.H100_SXM, 8e9, 4096, decode.GQA_LLAMA_8B, 0, 512)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_attention_backward_matches_autograd(causal):
    rng = np.random.default_rng(4)
    q, k, v, do = (rng.standard_normal((2, 3, 45, 8)) for _ in range(4))
    q *= 40
    o, lse = kernels.flash_attention_lse(q, k, v, block_size=16, causal=causal)
    grads = kernels.flash_attention_backward(q, k, v, o, lse, do, block_size=16, causal=causal)
    leaves = [torch.from_numpy(t).requires_grad_() for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*leaves, is_causal=causal)
    out.backward(torch.from_numpy(do))
    np.testing.assert_allclose(o, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    for g, t in zip(grads, leaves):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-8, atol=1e-10)
