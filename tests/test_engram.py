"""Known-answer tests of the engram math and of the cycle on a tiny model."""

import pytest
import torch

from companion.engine import engram as E
from companion.engine.config import ConfigError, EngramConfig


def test_chunk_bounds_cover_sequence_without_gaps():
    for length in range(1, 70):
        for slots in (1, 3, 32):
            b = E.chunk_bounds(length, slots)
            assert b[0][0] == 0 and b[-1][1] == length
            assert all(a1 == b0 for (_, a1), (b0, _) in zip(b, b[1:]))
            sizes = [e - s for s, e in b]
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
            assert len(b) == min(length, slots)


def test_pool_known_answer():
    states = torch.arange(12.0).reshape(6, 2)  # rows [0,1],[2,3],...,[10,11]
    assert torch.equal(E.pool(states, 3), torch.tensor([[1.0, 2.0], [5.0, 6.0], [9.0, 10.0]]))
    # 5 rows into 2 chunks: the first chunk takes the extra row.
    assert torch.equal(E.pool(torch.arange(5.0).reshape(5, 1), 2), torch.tensor([[1.0], [3.5]]))


def test_pool_short_sequence_gives_fewer_slots_never_nan():
    out = E.pool(torch.randn(3, 8), 32)
    assert out.shape == (3, 8) and torch.isfinite(out).all()
    assert E.pool(torch.randn(0, 8), 32).shape == (0, 8)


def test_scale_matches_target_mean_row_norm():
    eng = torch.randn(32, 16) * 7
    scaled = E.scale(eng, 2.5)
    assert E.mean_row_norm(scaled) == pytest.approx(2.5, rel=1e-5)
    # one factor for all rows: directions and relative norms are kept
    ratio = scaled.norm(dim=1) / eng.norm(dim=1)
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
    assert torch.equal(E.scale(torch.zeros(4, 3), 1.0), torch.zeros(4, 3))


def test_inject_prepends_and_extends_mask():
    embeds = torch.randn(1, 5, 4)
    eng = torch.randn(3, 4)
    out, mask = E.inject(eng, embeds)
    assert out.shape == (1, 8, 4) and mask.shape == (1, 8) and mask.sum() == 8
    assert torch.equal(out[0, :3], eng) and torch.equal(out[:, 3:], embeds)


def test_empty_engram_changes_nothing():
    embeds = torch.randn(1, 5, 4)
    for eng in (None, torch.zeros(0, 4)):
        out, mask = E.inject(eng, embeds)
        assert out is embeds and mask.shape == (1, 5)


def test_inject_refuses_wrong_width():
    with pytest.raises(ValueError, match="width"):
        E.inject(torch.randn(2, 3), torch.randn(1, 5, 4))


def test_extract_is_hidden_states_index():
    hs = tuple(torch.full((1, 2, 3), float(i)) for i in range(5))
    assert torch.equal(E.extract(hs, 3), torch.full((2, 3), 3.0))
    with pytest.raises(IndexError):
        E.extract(hs, 5)


def test_effective_rank_known_answers():
    assert E.effective_rank(torch.ones(8, 4)) == pytest.approx(1.0, abs=1e-4)
    assert E.effective_rank(torch.eye(4)) == pytest.approx(4.0, rel=1e-4)


def test_config_validation():
    with pytest.raises(ConfigError, match="slots"):
        EngramConfig(slots=0)
    with pytest.raises(ConfigError, match="pooling"):
        EngramConfig.from_dict({"pooling": "max"})  # the seed's knobs live in its recipe, read from old dicts
    with pytest.raises(ConfigError, match="beyond this model's depth"):
        EngramConfig(layer=16).check_model(num_hidden_layers=4)
    EngramConfig(layer=4).check_model(num_hidden_layers=4)  # 4 blocks -> hidden_states[4] exists
    cfg = EngramConfig(layer=8, slots=4)
    assert EngramConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.differences(EngramConfig()) == ["layer: 8 -> 16", "slots: 4 -> 32"]
    with pytest.raises(ConfigError, match="unknown recipe fields"):
        EngramConfig.from_dict({"layer": 1, "colour": "red"})


def test_the_config_holds_only_what_the_recipe_has():
    # Sessions stored the seed's knobs with every recipe; they load, and nothing prints them any more.
    old = {"injection": "prepend-embeds", "layer": 16, "pooling": "chunk-mean", "scaling": "embedding-mean-norm",
           "slots": 32, "recipe": "select-chat", "fixed": "ab" * 32}
    cfg = EngramConfig.from_dict(old)
    assert cfg.to_dict() == {"layer": 16, "slots": 32, "recipe": "select-chat", "fixed": "ab" * 32}
    assert "pooling" not in cfg.describe() and "embedding" not in cfg.describe()
    assert "chunk-mean, embedding-mean-norm" in EngramConfig().describe()  # the seed recipe does pool and scale
    with pytest.raises(ConfigError, match="scaling 'none'.*cannot be resumed"):
        EngramConfig.from_dict({**old, "scaling": "none"})
