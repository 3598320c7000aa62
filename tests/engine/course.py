"""The course's answers, as written in DESIGN.md section 5 (shared by several tests)."""

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
