"""The nabla command for problems, instances, solutions and grading; expression answers."""

import json

import pytest
from click.testing import CliRunner

from server.cli import main
from server.engine.bank import load_bank
from server.engine.expression import grade_expression
from server.engine.problem import draw

BANK = load_bank()


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_problems_list_json():
    result = run("problems", "list", "--json")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert {r["id"] for r in rows} == set(BANK)
    assert all(set(r) == {"id", "title", "answer"} for r in rows)


def test_problems_check_passes_the_bank_and_fails_a_bad_spec(tmp_path):
    assert run("problems", "check", "mlp-relu", "scan-mlp").exit_code == 0
    bad = tmp_path / "bad.toml"
    bad.write_text((BANK["mlp-relu"].source).replace("z1 = W1 @ x", "z1 = W1 @ q"))
    result = run("problems", "check", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:" in result.output and "unknown name 'q'" in result.output


def test_instance_json_has_the_contract_and_is_deterministic():
    result = run("instance", "scan-mlp", "--seed", "4", "--seed", "5", "--json")
    assert result.exit_code == 0
    first, second = (json.loads(line) for line in result.output.splitlines())
    for key in (
        "problem",
        "version",
        "seed",
        "layout",
        "dims",
        "choices",
        "forward",
        "given",
        "ask",
        "values",
        "reference",
    ):
        assert key in first
    assert isinstance(first["values"]["z1"], list) and len(first["values"]["z1"]) == first["steps"]
    assert "dO" in first["values"] and "dX" in first["reference"] and "dz1" in first["reference"]
    again = json.loads(run("instance", "scan-mlp", "--seed", "4", "--json").output)
    assert again == first and second["seed"] == 5


def test_solution_and_grade_round_trip(tmp_path):
    sol = run("solution", "mlp-relu", "--seed", "9")
    assert sol.exit_code == 0 and "14. dx = dz1 @ W1" in sol.output
    answer = tmp_path / "a.txt"
    answer.write_text(sol.output)
    wrong = tmp_path / "b.txt"
    wrong.write_text(sol.output.replace("dW3 = z6 @ dz7", "dW3 = dz7.T @ z6.T"))
    result = run("grade", "mlp-relu", "--seed", "9", str(answer), str(wrong), "--json")
    assert result.exit_code == 0
    a, b = (json.loads(line) for line in result.output.splitlines())
    assert a["score"] == 1.0 and a["file"] == str(answer) and a["valid"] is True
    assert b["gradients"]["dW3"]["verdict"] == "transposed"
    text = run("grade", "mlp-relu", "--seed", "9", str(wrong))
    assert "✗" in text.output and "score: 0.857" in text.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["grade", "nope", "--seed", "1", "x.txt"], "unknown problem 'nope'"),
        (["grade", "mlp-relu", "--seed", "-3", "x.txt"], "seed must be a non-negative integer"),
        (
            ["grade", "mlp-relu", "--seed", "1", "/does/not/exist.txt"],
            "cannot read /does/not/exist.txt",
        ),
        (["instance", "mlp-relu", "--seed", "abc"], "is not a valid integer"),
    ],
)
def test_bad_cli_input_is_a_clear_error_with_exit_2(args, words):
    result = run(*args)
    assert result.exit_code == 2
    assert words in result.output
    assert "Traceback" not in result.output


def test_expression_answers():
    spec = BANK["rule-4a-generalized-chain"]
    for seed in range(5):
        inst = draw(spec, seed)
        reference = inst.reference
        assert grade_expression(spec, inst, reference).score == 1.0
        assert grade_expression(spec, inst, reference.replace("**", "^")).score == 1.0
        neg = grade_expression(spec, inst, f"-({reference})")
        assert neg.gradients["dx"].verdict == "sign" and neg.score == 0
        wrong = grade_expression(spec, inst, f"{reference} + x")
        assert wrong.gradients["dx"].verdict == "incorrect" and wrong.valid
        bad = grade_expression(spec, inst, "__import__('os')")
        assert not bad.valid and bad.errors


def test_expression_feedback_for_wrong_answers_never_gives_the_expected_value():
    spec = BANK["rule-4a-generalized-chain"]
    for seed in range(6):
        inst = draw(spec, seed)
        for answer in ("x", f"{inst.reference} + x", f"2*({inst.reference})",
                       "exp(exp(exp(exp(exp(x)))))", "x**x**x**x", "2/sqrt(x**2)"):
            result = grade_expression(spec, inst, answer, hidden_seeds=(seed, 1))
            g = result.gradients["dx"]
            assert result.score == 0 and g.verdict == "incorrect", answer
            assert "expected" not in g.message, g.message
            if answer.startswith("exp(exp"):
                assert g.message.startswith("dx is too large to evaluate"), g.message


def test_expression_answers_are_compared_at_points_drawn_per_submission():
    from server.engine.expression import sample_seed

    spec = BANK["rule-4a-generalized-chain"]
    inst = draw(spec, 1)
    seeds = {sample_seed(inst, (a, b)) for a in range(3) for b in range(3)}
    assert len(seeds) == 9 and sample_seed(inst, (1, 2)) == sample_seed(inst, (1, 2))
    assert sample_seed(inst) != sample_seed(draw(spec, 2))


def test_x_is_not_assumed_positive_unless_the_spec_domain_says_so():
    from server.engine.spec import parse_spec

    spec = BANK["rule-4a-generalized-chain"]
    # L = log(a*x**2) * g2 is defined for x < 0 too: 1/|x| for 1/x is wrong there
    inst = next(i for i in (draw(spec, s) for s in range(100))
                if "log" in i.forward and "x**2" in i.forward)
    assert "/x" in inst.reference
    wrong = inst.reference.replace("/x", "/sqrt(x**2)")
    result = grade_expression(spec, inst, wrong)
    assert result.score == 0 and "differs" in result.gradients["dx"].message
    positive = parse_spec(spec.source + "\ndomain = [0.3, 2.0]\n", "positive.toml")
    assert positive.domain == (0.3, 2.0)
    assert grade_expression(positive, draw(positive, inst.seed), wrong).score == 1.0


@pytest.mark.parametrize("line,words", [
    ("domain = [2, 1]", "low < high"),
    ("domain = [0, 1e9]", "within ±1e6"),
    ("domain = 'x > 0'", "domain must be [low, high]"),
])
def test_a_bad_domain_names_its_line(line, words):
    from server.engine.spec import SpecError, parse_spec

    source = BANK["rule-4a-generalized-chain"].source
    with pytest.raises(SpecError) as info:
        parse_spec(line + "\n" + source, "d.toml")
    assert "d.toml:1:" in str(info.value) and words in str(info.value)
    with pytest.raises(SpecError) as info:
        parse_spec("domain = [0, 1]\n" + BANK["mlp-relu"].source, "m.toml")
    assert 'only for answer = "expression"' in str(info.value)


def test_expression_spec_errors_name_the_line(tmp_path):
    from server.engine.spec import SpecError, parse_spec

    text = BANK["rule-4a-generalized-chain"].source.replace("g1 = a * x**{p}", "g1 = a * y**{p}")
    with pytest.raises(SpecError) as info:
        parse_spec(text, "e.toml")
    assert "unknown name" in str(info.value) and "e.toml:" in str(info.value)


def test_expression_scores_use_the_weighted_score_and_stay_at_most_one():
    from server.engine.spec import parse_spec

    spec = BANK["rule-4a-generalized-chain"]
    weighted = parse_spec(spec.source + "\n[weights]\nx = 4\n", "weighted.toml")
    for seed in range(3):
        inst = draw(weighted, seed)
        assert grade_expression(weighted, inst, inst.reference).score == 1.0
        assert grade_expression(weighted, inst, f"2*({inst.reference}) + 1").score == 0.0
