"""TinyGPT: causality, parameter counting, FLOP formulas."""

import pytest
import torch

from labutils.model import GPTConfig, TinyGPT, count_params, flops_per_token, train_flops

CFG = GPTConfig(vocab_size=16, context_length=12, d_model=32, n_layers=2, n_heads=4)


def test_causal():
    torch.manual_seed(0)
    model = TinyGPT(CFG).eval()
    x = torch.randint(0, 16, (2, 12))
    base = model(x)
    assert base.shape == (2, 12, 16)
    for t in range(11):
        y = x.clone()
        y[:, t + 1] = (y[:, t + 1] + 1) % 16  # change token t+1
        out = model(y)
        assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-6), t  # logits <= t unchanged
        assert not torch.allclose(out[:, t + 1], base[:, t + 1])


def test_count_params_matches_module():
    model = TinyGPT(CFG)
    assert count_params(model, embeddings=True) == sum(p.numel() for p in model.parameters())
    emb = model.tok_emb.weight.numel() + model.pos_emb.weight.numel() + model.head.weight.numel()
    assert count_params(model) == count_params(CFG) == sum(p.numel() for p in model.parameters()) - emb
    # Kaplan's 12·L·d² plus biases and layer norms: per layer 13d + 4d·… small terms
    d, L = CFG.d_model, CFG.n_layers
    assert count_params(CFG) == L * (12 * d * d + 13 * d) + 2 * d


def test_d_ff_default():
    assert GPTConfig(8, 8, 16, 1, 2).d_ff == 64
    assert GPTConfig(8, 8, 16, 1, 2, d_ff=24).d_ff == 24


def test_flops():
    assert train_flops(1e6, 2e9) == 6 * 1e6 * 2e9
    n = count_params(CFG) + CFG.d_model * CFG.vocab_size
    assert flops_per_token(CFG) == 6 * n + 6 * CFG.n_layers * CFG.context_length * CFG.d_model
    with pytest.raises(ValueError):
        train_flops(-1, 10)


@pytest.mark.parametrize("kwargs", [dict(d_model=30, n_heads=4), dict(n_layers=0), dict(vocab_size=2.5)])
def test_bad_config(kwargs):
    base = dict(vocab_size=16, context_length=12, d_model=32, n_layers=2, n_heads=4)
    with pytest.raises(ValueError):
        GPTConfig(**dict(base, **kwargs))


def test_bad_tokens():
    model = TinyGPT(CFG)
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_torch_threads_restores_the_count():
    from labutils import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        with torch_threads(0):
            pass
