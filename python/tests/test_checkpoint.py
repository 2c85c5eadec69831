"""save_checkpoint / load_checkpoint on optim.torch optimizers and SAM: a run
saved, loaded into a new optimizer (in this process or a new one, with an lr
scheduler resumed from its state_dict) and continued is bit for bit the run
that was never interrupted; bad files, other optimizers and parameters of
other shapes are refused without changing anything.

Run as a script (`test_checkpoint.py resume DIR NAME...`), this file is the
new process that resumes the runs test_resume_in_a_new_process saved."""
import copy
import os
import subprocess
import sys

import pytest
import torch

import optim
import optim.torch as ot

# SAM's first_step/second_step are not the step() the scheduler counts: its warning does not apply.
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")

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
    (ot.Lion, dict(lr=1e-3, weight_decay=0.5)),
    (ot.Adamax, dict(lr=1e-2, weight_decay=0.01)),
    (ot.ASGD, dict(t0=5, lambd=0.01)),
    (ot.Rprop, dict(etas=(0.4, 1.3))),
    (ot.LAMB, dict(lr=1e-2, trust_clip=True)),
    (ot.LARS, dict(lr=0.5, momentum=0.9, weight_decay=1e-3)),
    (ot.Adafactor, dict(weight_decay=0.05, d=1.5, eps=(1e-20, 1e-3))),
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
    with pytest.raises(optim.OptimError, match="the checkpoint is of rule sgd, this optimizer's rule is adam") as info:
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


def test_shapes_are_checked(tmp_path):
    """Adam state of a (4, 2) parameter does not load into a (2, 4) one."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(4, 2))
    opt = ot.Adam([a], lr=1e-2)
    a.grad = torch.randn(4, 2)
    opt.step()
    opt.save_checkpoint(str(tmp_path / "a.ckpt"))
    b = torch.nn.Parameter(torch.randn(2, 4))
    other = ot.Adam([b], lr=1e-2)
    b.grad = torch.randn(2, 4)
    other.step()
    before = {k: v.clone() for k, v in other.state[b].items()}
    with pytest.raises(optim.OptimError, match=r"param 0 'param0' has shape \[2, 4\] in the optimizer, "
                                               r"\[4, 2\] in the checkpoint") as info:
        other.load_checkpoint(str(tmp_path / "a.ckpt"))
    assert info.value.name == "OPTIM_EMISMATCH"
    assert all(torch.equal(before[k], other.state[b][k]) for k in before)
    c = torch.nn.Parameter(torch.zeros(4, 2))
    same = ot.Adam([c])
    same.load_checkpoint(str(tmp_path / "a.ckpt"))
    assert torch.equal(same.state[c]["exp_avg"], opt.state[a]["exp_avg"])


def test_damage_names_the_parameter(tmp_path):
    model = _model(0)
    opt = ot.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, 0, 2, 0)
    path = tmp_path / "run.ckpt"
    opt.save_checkpoint(str(path))
    data = bytearray(path.read_bytes())
    data[-12 - 4 - 8] ^= 0x10  # the last float of the last section: param3's exp_avg_sq
    path.write_bytes(bytes(data))
    with pytest.raises(optim.OptimError, match=r"section 5 \(PARM of param 3 'param3'\): checksum mismatch") as info:
        opt.load_checkpoint(str(path))
    assert info.value.name == "OPTIM_ECHECKSUM"


def _crc32c(data):
    """CRC-32C (Castagnoli, reflected 0x82F63B78), written here from its definition."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _sections(data):
    """(offset, tag, payload length) of every section of a checkpoint's bytes (docs/CHECKPOINT.md)."""
    count = int.from_bytes(data[24:28], "little")
    out, off = [], 32
    for _ in range(count):
        length = int.from_bytes(data[off + 8:off + 16], "little")
        out.append((off, bytes(data[off:off + 4]).decode(), length))
        off += 16 + length + 4
    assert off == len(data) - 12
    return out


def _fix_file_crc(data):
    data[-12:-8] = _crc32c(bytes(data[:-12])).to_bytes(4, "little")


def test_crc32c_check_value():
    assert _crc32c(b"123456789") == 0xE3069283


def test_damage_names_every_section_kind(tmp_path):
    """A byte flipped in every section kind (META, each GRUP, each PARM, a section a reader may skip),
    the file checksum made right again: the section's own checksum refuses it, naming that section
    (never the file checksum, which would name the wrong part), and nothing is loaded."""
    model = _model(0)
    params = list(model.parameters())
    opt = ot.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 1e-3}], lr=1e-2)
    _train(model, opt, 0, 2, 0)
    path = tmp_path / "run.ckpt"
    opt.save_checkpoint(str(path))
    good = bytearray(path.read_bytes())
    # A section a reader may skip (flag bit 0), inserted after the GRUPs: header count, size and CRC fixed.
    payload = b"later"
    body = b"XTRA" + (1).to_bytes(4, "little") + len(payload).to_bytes(8, "little") + payload
    extra = body + _crc32c(body).to_bytes(4, "little")
    at = _sections(good)[3][0]
    good[at:at] = extra
    good[24:28] = (int.from_bytes(good[24:28], "little") + 1).to_bytes(4, "little")
    good[16:24] = len(good).to_bytes(8, "little")
    good[28:32] = _crc32c(bytes(good[:28])).to_bytes(4, "little")
    _fix_file_crc(good)
    path.write_bytes(bytes(good))
    opt.load_checkpoint(str(path))  # intact, with the skippable section: loads
    secs = _sections(good)
    assert [t for _, t, _ in secs] == ["META", "GRUP", "GRUP", "XTRA", "PARM", "PARM", "PARM", "PARM"]
    names = ["section 0 (META)", "section 1 (GRUP of group 0)", "section 2 (GRUP of group 1)",
             "section 3 (XTRA)"] + ["section %d (PARM of param %d 'param%d')" % (4 + i, i, i) for i in range(4)]
    state = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in params}
    for k, (off, tag, length) in enumerate(secs):
        for where in (16, 16 + length // 2, 16 + length - 1, 16 + length):  # payload's first, middle, last; the CRC
            bad = bytearray(good)
            bad[off + where] ^= 0x20
            _fix_file_crc(bad)
            path.write_bytes(bytes(bad))
            with pytest.raises(optim.OptimError) as info:
                opt.load_checkpoint(str(path))
            msg = str(info.value)
            assert info.value.name == "OPTIM_ECHECKSUM", msg
            assert names[k] + ": checksum mismatch" in msg, (tag, where, msg)
            assert "file checksum" not in msg, msg
    for p in params:
        assert all(torch.equal(state[p][key], opt.state[p][key]) for key in state[p])


# ---- SAM, lr schedulers, a new process ------------------------------------------------

def _build(name, seed):
    """(model, optimizer, scheduler or None, is_sam) of a named configuration."""
    from optim.torch import lr_scheduler as ls
    model = _model(seed)
    if name == "adam+onecycle":
        opt = ot.Adam(model.parameters(), lr=1e-2, amsgrad=True)
        return model, opt, ls.OneCycleLR(opt, max_lr=0.05, total_steps=40), False
    if name == "rmsprop+steplr+clip":
        opt = ot.RMSprop(model.parameters(), lr=1e-2, centered=True, momentum=0.5, nonfinite="skip",
                         clip_grad_norm=(0.5, 1.0))
        return model, opt, ls.StepLR(opt, step_size=4, gamma=0.7), False
    if name == "sgd+sam":
        opt = ot.SAM(model.parameters(), ot.SGD, rho=0.05, lr=0.1, momentum=0.9, nesterov=True)
        return model, opt, None, True
    if name == "adamw+asam+cosine":
        opt = ot.SAM(model.parameters(), ot.AdamW, rho=0.5, adaptive=True, eta=0.01, lr=1e-2)
        return model, opt, ls.CosineAnnealingLR(opt, T_max=15, eta_min=1e-4), True
    raise ValueError(name)


def _run(model, opt, sched, sam, start, stop, seed):
    for t in range(start, stop):
        g = torch.Generator().manual_seed(seed * 1000 + t)
        x, y = torch.randn(32, 8, generator=g), torch.randn(32, 2, generator=g)
        loss = lambda: torch.nn.functional.mse_loss(model(x), y)  # noqa: E731
        opt.zero_grad()
        loss().backward()
        if t == 7 and opt.param_groups[0].get("nonfinite") == "skip":
            next(model.parameters()).grad[0].fill_(float("nan"))
        if sam:
            opt.first_step(zero_grad=True)
            loss().backward()
            opt.second_step(zero_grad=True)
        else:
            opt.step()
        if sched is not None:
            sched.step()


def _outcome(model, opt):
    """What must be identical: the parameters, every state tensor, the lrs."""
    sd = opt.state_dict()
    return {"params": [p.detach().clone() for p in model.parameters()],
            "state": {i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()}
                      for i, st in sd["state"].items()},
            "groups": [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]}


def _same(a, b):
    assert len(a["params"]) == len(b["params"])
    for x, y in zip(a["params"], b["params"]):
        assert torch.equal(x, y)
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert (torch.equal(v, b["state"][i][k]) if torch.is_tensor(v) else v == b["state"][i][k]), k
    assert a["groups"] == b["groups"]


N, K = 20, 9
CONFIGS = ["adam+onecycle", "rmsprop+steplr+clip", "sgd+sam", "adamw+asam+cosine"]


def _save_interrupted(name, seed, d):
    model, opt, sched, sam = _build(name, seed)
    _run(model, opt, sched, sam, 0, K, seed)
    opt.save_checkpoint(os.path.join(d, name + ".ckpt"))
    torch.save(model.state_dict(), os.path.join(d, name + ".model.pt"))
    if sched is not None:
        torch.save(sched.state_dict(), os.path.join(d, name + ".sched.pt"))


def _resume(name, seed, d):
    """The documented order: optimizer, scheduler, load_checkpoint, scheduler state."""
    model, opt, sched, sam = _build(name, seed + 1)  # other initial weights: the files bring theirs
    model.load_state_dict(torch.load(os.path.join(d, name + ".model.pt")))
    opt.load_checkpoint(os.path.join(d, name + ".ckpt"))
    if sched is not None:
        sched.load_state_dict(torch.load(os.path.join(d, name + ".sched.pt")))
    _run(model, opt, sched, sam, K, N, seed)
    return _outcome(model, opt)


@pytest.mark.parametrize("name", CONFIGS)
def test_resume_with_schedulers_and_sam(tmp_path, seed, name):
    model, opt, sched, sam = _build(name, seed)
    _run(model, opt, sched, sam, 0, N, seed)
    straight = _outcome(model, opt)
    _save_interrupted(name, seed, str(tmp_path))
    _same(straight, _resume(name, seed, str(tmp_path)))


def test_resume_in_a_new_process(tmp_path, seed):
    """k steps here, saved; N - k steps in another Python process; compared bit for bit."""
    d = str(tmp_path)
    straight = {}
    for name in CONFIGS:
        model, opt, sched, sam = _build(name, seed)
        _run(model, opt, sched, sam, 0, N, seed)
        straight[name] = _outcome(model, opt)
        _save_interrupted(name, seed, d)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "resume", d, str(seed)] + CONFIGS,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for name in CONFIGS:
        _same(straight[name], torch.load(os.path.join(d, name + ".out.pt")))


def test_sam_checkpoints_refused_mid_step(tmp_path):
    model, opt, _, _ = _build("sgd+sam", 0)
    x = torch.randn(4, 8)
    model(x).sum().backward()
    opt.first_step()
    for call in (lambda: opt.save_checkpoint(str(tmp_path / "x")), lambda: opt.load_checkpoint(str(tmp_path / "x"))):
        with pytest.raises(RuntimeError, match="between first_step and second_step"):
            call()
    opt.restore()
    opt.save_checkpoint(str(tmp_path / "x"))
    assert opt.base_optimizer.param_groups is opt.param_groups
    opt.load_checkpoint(str(tmp_path / "x"))


def _child(argv):
    d, seed, names = argv[0], int(argv[1]), argv[2:]
    for name in names:
        torch.save(_resume(name, seed, d), os.path.join(d, name + ".out.pt"))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "resume":
        _child(sys.argv[2:])
    else:
        sys.exit("usage: test_checkpoint.py resume DIR SEED NAME...")


def test_named_parameters_match_by_name(tmp_path):
    """Parameters given as (name, tensor) pairs (model.named_parameters()) carry their names into liboptim: a
    checkpoint then finds each parameter's state by name, in whatever order the new optimizer lists them; by
    position it would not."""
    import optim.torch as ot
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6))
    opt = ot.Adam(model.named_parameters(), lr=0.01)
    assert opt.param_groups[0]["param_names"] == [n for n, _ in model.named_parameters()]
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
    path = str(tmp_path / "named.ckpt")
    opt.save_checkpoint(path)
    assert "param_names" in opt.state_dict()["param_groups"][0]
    # Another model with the same weights, its parameters listed in reverse order.
    twin = copy.deepcopy(model)
    reverse = list(reversed(list(twin.named_parameters())))
    other = ot.Adam(reverse, lr=0.01)
    other.load_checkpoint(path, match="name")
    for name, p in twin.named_parameters():
        q = dict(model.named_parameters())[name]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(other.state[p][key], opt.state[q][key]), (name, key)
    # By position the sizes do not line up: refused.
    third = ot.Adam(list(reversed(list(copy.deepcopy(model).named_parameters()))), lr=0.01)
    with pytest.raises(optim.OptimError, match="param 0 '2.bias' has 6 elements in the optimizer, 24 in the checkpoint"):
        third.load_checkpoint(path, match="position")
    # Bad names are refused before anything is added.
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="parameter name 'a' is given twice"):
        ot.SGD([("a", w), ("a", torch.zeros(3, requires_grad=True))], lr=0.1)
    with pytest.raises(TypeError, match="mixes \\(name, tensor\\) pairs"):
        ot.SGD([("a", w), torch.zeros(3, requires_grad=True)], lr=0.1)
    with pytest.raises(TypeError, match="must be a non-empty str"):
        ot.SGD([{"params": [w], "param_names": [""]}], lr=0.1)
