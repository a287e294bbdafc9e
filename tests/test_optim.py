"""The paper's update rule and the plateau schedule."""

import torch

from alexnet.engine.optim import PaperSGD, PlateauSchedule


def _grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def test_paper_rule_formula():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = PaperSGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    v = torch.zeros(2)
    ref = w.detach().clone()
    for step in range(3):
        _grads([w], step)
        v = 0.9 * v - 0.01 * 0.1 * ref - 0.1 * w.grad
        ref = ref + v
        opt.step()
        torch.testing.assert_close(w.detach(), ref)


def test_paper_rule_equals_torch_sgd_at_constant_lr_and_differs_after_a_drop():
    a = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(2)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    pa = PaperSGD(a, lr=0.01, momentum=0.9, weight_decay=5e-4)
    pb = torch.optim.SGD(b, lr=0.01, momentum=0.9, weight_decay=5e-4)
    for step in range(5):
        _grads(a, step), _grads(b, step)
        pa.step(), pb.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    for opt in (pa, pb):
        opt.param_groups[0]["lr"] = 0.001
    _grads(a, 9), _grads(b, 9)
    pa.step(), pb.step()
    assert not torch.allclose(a[0], b[0], rtol=1e-5, atol=1e-6)


def test_plateau_schedule():
    opt = PaperSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    s = PlateauSchedule(opt, patience=2, max_drops=2)
    drops = [s.step(e) for e in (0.9, 0.8, 0.8, 0.81, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7)]
    assert drops == [False, False, False, True, False, False, True, False, False, False]
    assert abs(s.lr - 0.0001) < 1e-12 and s.drops == 2
    s2 = PlateauSchedule(opt, patience=2, max_drops=2)
    s2.load_state_dict(s.state_dict())
    assert s2.state_dict() == s.state_dict()


def test_warm_up_is_the_schedules():
    """The rate rises linearly over the first warmup_steps steps to the optimizer's rate, then plateau drops apply."""
    opt = PaperSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.04)
    s = PlateauSchedule(opt, patience=1, max_drops=1, warmup_steps=4)
    rates = []
    for step in range(6):
        s.warm_up(step)
        rates.append(s.lr)
    assert rates == [0.01, 0.02, 0.03, 0.04, 0.04, 0.04]
    s.step(0.5), s.step(0.5)  # a plateau: one drop, and warm-up is over
    s.warm_up(6)
    assert abs(s.lr - 0.004) < 1e-12
    assert PlateauSchedule(opt).warmup_steps == 0  # the paper: no warm-up


def test_schedule_state_of_older_checkpoints_loads():
    """The schedule's state is still {best, bad_epochs, drops}: checkpoints written before warm-up moved here resume."""
    opt = PaperSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    s = PlateauSchedule(opt, warmup_steps=10)
    s.load_state_dict({"best": 0.4, "bad_epochs": 2, "drops": 1})
    assert s.state_dict() == {"best": 0.4, "bad_epochs": 2, "drops": 1}
