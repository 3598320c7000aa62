"""An independent reference: torch.autograd over the same forward programs."""

import numpy as np
import pytest

from server.engine import reference as ref
from server.engine.bank import load_bank
from server.engine.instance import draw_instance

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
}

PROBLEMS = [s for s in load_bank().values() if s.answer_kind != "expression"]


@pytest.mark.parametrize("spec", PROBLEMS, ids=lambda s: s.id)
def test_references_agree_with_torch_autograd(spec):
    for seed in range(5):
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
