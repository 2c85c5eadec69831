"""save_checkpoint / load_checkpoint on optim.torch optimizers: a run saved,
loaded into a new optimizer and continued is bit for bit the run that was
never interrupted; bad files and other optimizers are refused without
changing anything."""
import os

import pytest
import torch

import optim
import optim.torch as ot

CLASSES = [
    (ot.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (ot.Adagrad, dict(lr=0.05, lr_decay=0.01)),
    (ot.RMSprop, dict(lr=1e-3, centered=True, momentum=0.5)),
    (ot.Adadelta, dict(momentum=0.5)),
    (ot.Adam, dict(lr=1e-2, amsgrad=True, nonfinite="skip", clip_grad_norm=1.0)),
    (ot.AdamW, dict(lr=1e-2, eps_placement="inside")),
    (ot.RAdam, dict(decoupled_weight_decay=True, weight_decay=0.1)),
    (ot.NAdam, dict(momentum_decay=0.01)),
    (ot.AdaBound, dict(lr=1e-2, amsbound=True)),
]


def _model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def _train(model, opt, start, stop, seed):
    for t in range(start, stop):
        g = torch.Generator().manual_seed(seed * 1000 + t)
        x, y = torch.randn(32, 8, generator=g), torch.randn(32, 2, generator=g)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if t == 7:  # a non-finite gradient: skipped under nonfinite="skip", else kept out
            for p in model.parameters():
                if opt.param_groups[0].get("nonfinite") == "skip":
                    p.grad[0].fill_(float("nan"))
                break
        opt.step()


@pytest.mark.parametrize("cls,kw", CLASSES, ids=[c.__name__ for c, _ in CLASSES])
def test_resume_is_bit_for_bit(tmp_path, seed, cls, kw):
    straight_model = _model(seed)
    straight = cls(straight_model.parameters(), **kw)
    _train(straight_model, straight, 0, 20, seed)

    first_model = _model(seed)
    first = cls(first_model.parameters(), **kw)
    _train(first_model, first, 0, 9, seed)
    path = tmp_path / "run.ckpt"
    first.save_checkpoint(str(path))
    torch.save(first_model.state_dict(), tmp_path / "model.pt")

    # A new model and optimizer, built with other settings: the checkpoint brings its own.
    model = _model(seed + 1)
    model.load_state_dict(torch.load(tmp_path / "model.pt"))
    other = dict(kw, lr=0.123) if "lr" in kw else dict(kw)
    resumed = cls(model.parameters(), **other)
    resumed.load_checkpoint(str(path))
    assert resumed.param_groups[0]["lr"] == first.param_groups[0]["lr"]
    _train(model, resumed, 9, 20, seed)

    for a, b in zip(straight_model.parameters(), model.parameters()):
        assert torch.equal(a, b), "%s: the resumed run differs (seed %d)" % (cls.__name__, seed)
    sa, sb = straight.state_dict(), resumed.state_dict()
    for i in sa["state"]:
        for key, value in sa["state"][i].items():
            if torch.is_tensor(value):
                assert torch.equal(value, sb["state"][i][key]), key
            else:
                assert value == sb["state"][i][key], key
    assert resumed.skipped_steps == straight.skipped_steps


def test_state_views_follow_a_load(tmp_path):
    model = _model(0)
    opt = ot.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, 0, 3, 0)
    p0 = next(model.parameters())
    view = opt.state[p0]["exp_avg"]  # taken before the load: a view of the C memory
    opt.save_checkpoint(str(tmp_path / "a"))
    saved = view.clone()
    _train(model, opt, 3, 6, 0)
    assert not torch.equal(view, saved)
    opt.load_checkpoint(str(tmp_path / "a"))
    assert torch.equal(view, saved)
    assert torch.equal(opt.state[p0]["exp_avg"], saved)


def test_bad_files_and_other_optimizers_change_nothing(tmp_path):
    model = _model(0)
    opt = ot.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, 0, 3, 0)
    good = tmp_path / "good.ckpt"
    opt.save_checkpoint(str(good))
    data = good.read_bytes()
    _train(model, opt, 3, 5, 0)
    before = {k: v.clone() for k, v in opt.state[next(model.parameters())].items() if torch.is_tensor(v)}

    def unchanged():
        after = opt.state[next(model.parameters())]
        return all(torch.equal(before[k], after[k]) for k in before)

    cases = []
    (tmp_path / "truncated").write_bytes(data[: len(data) // 2])
    cases.append(("truncated", "OPTIM_ETRUNCATED", "truncated"))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    (tmp_path / "corrupt").write_bytes(bytes(flipped))
    cases.append(("corrupt", "OPTIM_ECHECKSUM", "corrupt"))
    (tmp_path / "text").write_bytes(b"hello, not a checkpoint")
    cases.append(("text", "OPTIM_EMAGIC", "not an optim checkpoint"))
    cases.append(("missing", "OPTIM_EOPEN", "cannot open"))
    for name, code, needle in cases:
        with pytest.raises(optim.OptimError, match=needle) as info:
            opt.load_checkpoint(str(tmp_path / name))
        assert info.value.name == code
        assert str(tmp_path / name) in str(info.value)
        assert unchanged()

    other = ot.SGD(_model(0).parameters(), lr=0.1, momentum=0.9)
    other.save_checkpoint(str(tmp_path / "sgd.ckpt"))
    with pytest.raises(optim.OptimError, match="saved by a sgd optimizer, this one is adam") as info:
        opt.load_checkpoint(str(tmp_path / "sgd.ckpt"))
    assert info.value.name == "OPTIM_EMISMATCH" and unchanged()
    smaller = ot.Adam(torch.nn.Linear(8, 2).parameters())
    with pytest.raises(optim.OptimError, match="has 4 params, the optimizer 2"):
        smaller.load_checkpoint(str(good))
    with pytest.raises(ValueError, match="match = 'order' must be 'name' or 'position'"):
        opt.load_checkpoint(str(good), match="order")
    with pytest.raises(optim.OptimError, match="cannot create a temporary file"):
        opt.save_checkpoint(str(tmp_path / "no-such-dir" / "x.ckpt"))
    opt.load_checkpoint(str(good), match="position")
    assert opt.state[next(model.parameters())]["step"] == 3
    assert not os.path.exists(str(tmp_path / "no-such-dir"))
