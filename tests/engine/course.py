"""The course's answers, as written in docs/design.md section 5 (shared by several tests)."""

# The recitation's 14 backward equations for the two-hidden-layer ReLU MLP.
SEED_ANSWER = """\
1. dz7 = doutput
2. db3 = doutput
3. dW3 = z6 @ dz7
4. dz6 = dz7 @ W3
5. dz5 = dz6 * (z5 > 0).T
6. dz4 = dz5
7. db2 = dz5
8. dW2 = z3 @ dz4
9. dz3 = dz4 @ W2
10. dz2 = dz3 * (z2 > 0).T
11. db1 = dz2
12. dz1 = dz2
13. dW1 = x @ dz1
14. dx = dz1 @ W1
"""

# scan-mlp with one loop, accumulating the shared parameters and the slices of dX.
SCAN_ANSWER = """\
for t in range(T - N + 1):
    dz7[t] = dO[t]
    db3 += dO[t]
    dW3 += z6[t] @ dz7[t]
    dz6[t] = dz7[t] @ W3
    dz5[t] = dz6[t] * (z5[t] > 0).T
    dz4[t] = dz5[t]
    db2 += dz5[t]
    dW2 += z3[t] @ dz4[t]
    dz3[t] = dz4[t] @ W2
    dz2[t] = dz3[t] * (z2[t] > 0).T
    dz1[t] = dz2[t]
    db1 += dz2[t]
    dW1 += x[t] @ dz1[t]
    dx[t] = dz1[t] @ W1
    dX[:, t:t+N] += dx[t]
"""


def right_only_on_its_own_instance(spec):
    """(seed, answer) for mlp-relu: a mask with a threshold, (z5 > 0.3), that
    equals (z5 > 0) on the instance of that seed but not on its hidden ones
    (the legacy hidden seeds)."""
    from server.engine.instance import draw_hidden_instances, draw_instance, legacy_hidden_seeds

    for seed in range(200):
        inst = draw_instance(spec, seed)
        if inst.values["z5"][inst.values["z5"] > 0].min() > 0.3:
            hidden = draw_hidden_instances(spec, inst, legacy_hidden_seeds(inst))
            if all(((h.values["z5"] > 0) & (h.values["z5"] <= 0.3)).any() for h in hidden):
                return seed, SEED_ANSWER.replace("(z5 > 0)", "(z5 > 0.3)")
    raise AssertionError("no such seed in 0..199")
