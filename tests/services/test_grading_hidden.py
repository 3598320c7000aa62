"""grade_job checks an equations answer on the submission's hidden instances (issue 9, §2)."""

import json

from server.engine.bank import load_bank
from server.engine.instance import draw_instance, legacy_hidden_seeds
from server.services import grading
from tests.engine.course import right_only_on_its_own_instance


def test_grade_job_checks_equations_on_the_hidden_seeds_of_the_submission():
    spec = load_bank()["mlp-relu"]
    seed, text = right_only_on_its_own_instance(spec)
    inst = draw_instance(spec, seed)
    document = json.dumps(inst.to_json())

    def job(hidden_seeds):
        return grading.GradingJob(1, spec, document, text, tuple(hidden_seeds))

    assert grading.grade_job(job(())).score == 1.0  # no hidden check
    outcome = grading.grade_job(job(legacy_hidden_seeds(inst)))
    assert outcome.status == "graded" and outcome.score < 1
    five = next(e for e in outcome.result["equations"] if e["line"] == 5)
    assert five["verdict"] == "incorrect" and "hidden check" in five["message"]
