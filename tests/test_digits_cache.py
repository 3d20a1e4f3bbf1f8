"""The cached digits model is trusted only when intact and of the asked configuration."""
import torch

from finn_demo.data.datasets import digits_datasets
from finn_demo.data.models import load_digits_model

TINY = {"width_mult": 0.25, "epochs": 1}  # enough to test the cache, not to be accurate


def test_model_is_trained_once_then_loaded_from_the_cache(tmp_path, capsys):
    train, _ = digits_datasets()
    first = load_digits_model(train, tmp_path, **TINY)
    assert "training" in capsys.readouterr().err
    second = load_digits_model(train, tmp_path, **TINY)
    assert "training" not in capsys.readouterr().err
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_corrupt_cache_is_rebuilt_with_a_message(tmp_path, capsys):
    train, _ = digits_datasets()
    load_digits_model(train, tmp_path, **TINY)
    cached = next(tmp_path.glob("*.pt"))
    cached.write_bytes(cached.read_bytes()[:1000])  # a truncated file
    capsys.readouterr()
    model = load_digits_model(train, tmp_path, **TINY)
    captured = capsys.readouterr()
    assert "is unusable (ValueError: checksum mismatch); training it again" in captured.out
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    load_digits_model(train, tmp_path, **TINY)
    assert "unusable" not in capsys.readouterr().out  # the rebuilt cache is trusted again


def test_cache_of_another_configuration_is_not_trusted(tmp_path, capsys):
    train, _ = digits_datasets()
    load_digits_model(train, tmp_path, **TINY)
    cached = next(tmp_path.glob("*.pt"))
    payload = torch.load(cached, weights_only=True)
    payload["config"]["train_size"] = 1
    torch.save(payload, cached)
    cached.with_suffix(".sha256").write_text(__import__("hashlib").sha256(cached.read_bytes()).hexdigest())
    capsys.readouterr()
    load_digits_model(train, tmp_path, **TINY)
    assert "configuration" in capsys.readouterr().out


def test_each_training_seed_trains_and_caches_its_own_model(tmp_path):
    train, _ = digits_datasets()
    first = load_digits_model(train, tmp_path, **TINY, seed=0)
    other = load_digits_model(train, tmp_path, **TINY, seed=1)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    assert not torch.equal(first.features[0][0].weight, other.features[0][0].weight)
    again = load_digits_model(train, tmp_path, **TINY, seed=1)
    assert torch.equal(other.features[0][0].weight, again.features[0][0].weight)


def test_fewer_stages_give_a_shorter_model_with_residual_blocks(tmp_path):
    train, _ = digits_datasets()
    model = load_digits_model(train, tmp_path, width_mult=0.5, epochs=1, stages=3)
    convs = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    residual = [block for block in model.features if getattr(block, "use_res_connect", False)]
    assert (len(convs), len(residual)) == (19, 3)  # at width 0.25 the first block is one too
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
