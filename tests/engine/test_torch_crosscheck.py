"""An independent reference: torch.autograd over the same forward programs."""

import numpy as np
import pytest

from server.engine import reference as ref
from server.engine.bank import load_bank
from server.engine.instance import draw_instance
from server.engine.ops import OPS

torch = pytest.importorskip(
    "torch",
    reason="PyTorch is not installed (CPU build: pip install torch==2.13.0); "
    "torch cross-check skipped",
)

TORCH_OPS = {
    "matmul": lambda a, b: a @ b,
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "neg": lambda a: -a,
    "transpose": lambda a: a.T,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "exp": torch.exp,
    "log": torch.log,
    "square": torch.square,
    "softmax": lambda a: torch.softmax(a, dim=0),
    "sum": lambda a: a.sum().reshape(1, 1),
    "sqrt": torch.sqrt,
    "mean": lambda a: a.mean().reshape(1, 1),
    "sum_axis0": lambda a: a.sum(dim=0, keepdim=True),
    "sum_axis1": lambda a: a.sum(dim=1, keepdim=True),
    "mean_axis0": lambda a: a.mean(dim=0, keepdim=True),
    "mean_axis1": lambda a: a.mean(dim=1, keepdim=True),
    "max_axis0": lambda a: a.max(dim=0, keepdim=True).values,
    "max_axis1": lambda a: a.max(dim=1, keepdim=True).values,
    "softmax_axis1": lambda a: torch.softmax(a, dim=1),
}

PROBLEMS = [s for s in load_bank().values() if s.answer_kind != "expression"]


@pytest.mark.parametrize("spec", PROBLEMS, ids=lambda s: s.id)
def test_references_agree_with_torch_autograd(spec):
    for seed in range(5):
        check_with_torch(spec, seed)


# issue 16: the course's problems, on 50 seeds
COURSE = [s for s in PROBLEMS if s.id in (
    "mlp-batch", "l2-regularised", "layernorm", "batchnorm-train", "attention-head",
    "conv1d-stride", "maxpool1d", "lstm-cell", "gru-cell")]


@pytest.mark.parametrize("spec", COURSE, ids=lambda s: s.id)
def test_course_references_agree_with_torch_autograd_on_fifty_seeds(spec):
    for seed in range(50):
        check_with_torch(spec, seed)


def check_with_torch(spec, seed):
    """torch.autograd over the instance's forward program gives its reference gradients."""
    inst = draw_instance(spec, seed)
    program = spec.program(inst.choice_index)
    sched = ref.schedule(program, inst.dims)
    leaves = {
        n: torch.tensor(
            inst.values[n], dtype=torch.float64, requires_grad=spec.vars[n].role != "const"
        )
        for n in program.leaves
    }
    env = dict(leaves)
    for ex in sched:
        args = [a if isinstance(a, float) else env[a] for a in ex.args]
        if ex.step.op == "slice":
            (r0, r1), (c0, c1) = ex.region
            env[ex.key] = args[0][r0:r1, c0:c1]
        else:
            env[ex.key] = TORCH_OPS[ex.step.op](*args)
    dgiven = inst.values["d" + spec.given]
    dgiven = dgiven if isinstance(dgiven, list) else [dgiven]
    keys = [ex.key for ex in sched if ex.step.target == spec.given]
    loss = sum(
        (torch.tensor(ref.to_layout(d, inst.layout)) * env[k]).sum()
        for d, k in zip(dgiven, keys)
    )
    loss.backward()
    for name, t in leaves.items():
        if t.grad is None:
            continue
        expected = ref.to_layout(t.grad.numpy(), inst.layout)
        assert np.allclose(inst.reference["d" + name], expected, rtol=1e-10, atol=1e-12), (
            spec.id,
            seed,
            name,
        )


@pytest.mark.parametrize("name", sorted(n for n in OPS if n != "slice"))
def test_every_operation_agrees_with_torch(name):
    """Forward and vector-Jacobian product of each record against torch.autograd
    (the rule texts are checked against the VJP in both layouts in test_ops.py)."""
    from tests.engine.test_ops import operands

    rng = np.random.default_rng(11)
    for _ in range(5):
        args = operands(name, rng)
        out = OPS[name].forward(args, None)
        tensors = [torch.tensor(a, requires_grad=True) if isinstance(a, np.ndarray) else a
                   for a in args]
        expected = TORCH_OPS[name](*tensors)
        np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
        g = rng.normal(size=out.shape)
        (expected * torch.tensor(g)).sum().backward()
        for i, t in enumerate(tensors):
            if isinstance(t, torch.Tensor):
                np.testing.assert_allclose(OPS[name].vjp(i, g, args, out, None),
                                           t.grad.numpy(), rtol=1e-10, atol=1e-12,
                                           err_msg=f"{name}[{i}]")


def test_division_by_an_array_and_of_a_constant_agree_with_torch():
    from server.engine import ops

    rng = np.random.default_rng(5)
    b = rng.uniform(0.5, 2.0, (3, 2))
    tb = torch.tensor(b, requires_grad=True)
    g = rng.normal(size=b.shape)
    (2.0 / tb * torch.tensor(g)).sum().backward()
    out = ops.forward("div", [2.0, b])
    np.testing.assert_allclose(ops.vjp("div", 1, g, [2.0, b], out), tb.grad.numpy(), rtol=1e-12)
