"""A dim with a fixed value (``K = 3``) is folded into the program's numbers, yet
the forward text, the model answer and the student's answer still name it."""

from click.testing import CliRunner

from server.cli import main
from server.engine.bank import load_bank
from server.engine.problem import draw, grade_answer, model_answer
from server.engine.spec import parse_spec


def fixed_k_spec():
    source = load_bank()["conv1d-stride"].source
    assert "K = [3, 4]" in source
    return source.replace("K = [3, 4]", "K = 3")


def test_a_fixed_dim_in_a_slice_bound_is_part_of_the_instance_and_the_answer():
    spec = parse_spec(fixed_k_spec(), "conv-fixed.toml")
    for seed in range(4):
        inst = draw(spec, seed)
        assert inst.dims["K"] == 3
        answer = model_answer(spec, inst)
        assert "+ K]" in answer
        result = grade_answer(spec, inst, answer, hidden_seeds=())
        assert result.valid, result.errors
        assert result.score == 1.0
        # the number itself is as good as the name
        literal = grade_answer(spec, inst, answer.replace("+ K]", "+ 3]"), hidden_seeds=())
        assert literal.valid and literal.score == 1.0


def test_a_fixed_dim_not_named_in_the_forward_text_stays_out_of_the_dims():
    spec = load_bank()["attention-head"]  # E = [4, 4], used only in shapes
    assert spec.dims["E"] == (4, 4)
    assert "E" not in draw(spec, 1).dims


def test_problems_check_grades_the_model_answer_as_text(tmp_path, monkeypatch):
    path = tmp_path / "conv-fixed.toml"
    path.write_text(fixed_k_spec())
    result = CliRunner().invoke(main, ["problems", "check", "--seeds", "2", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok   conv1d-stride" in result.output

    # a model answer that is not an answer is refused, naming its line and why (the check
    # the judge runs for the command, here in this process, where the patch applies)
    from server.engine import authoring

    monkeypatch.setattr(
        "server.engine.problem.model_answer",
        lambda spec, inst: "1. dX = undefined_name",
    )
    refused = authoring.check_text(fixed_k_spec(), str(path), seeds=1).refused
    assert "the model solution is not a valid answer on seed 0 (line 1" in refused[0].message
