"""The JSON contracts do not change: ``nabla`` and the API print, byte for byte,
what tests/golden/data holds (regenerate deliberately: tests/golden/corpus.py)."""

import pytest

from tests.golden.corpus import DATA, outputs


@pytest.fixture(scope="module")
def produced():
    return dict(outputs())


def test_every_golden_file_is_produced(produced):
    stored = sorted(path.name for path in DATA.iterdir())
    assert stored == sorted(produced)


@pytest.mark.parametrize("name", sorted(path.name for path in DATA.iterdir()))
def test_output_is_byte_for_byte_the_golden_file(produced, name):
    expected = (DATA / name).read_text()
    got = produced[name]
    if got != expected:
        import difflib

        diff = "".join(list(difflib.unified_diff(
            expected.splitlines(True), got.splitlines(True), "golden", "now"))[:80])
        pytest.fail(f"{name} differs from the golden file:\n{diff}")
