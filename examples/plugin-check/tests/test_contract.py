"""The plugin meets cnnaudit's check contract: one test per zoo model (cnnaudit.testing), the same suite
cnnaudit runs on its own checks. Run with `python -m pytest tests` after `pip install -e .` here."""

from cnnaudit.testing import parametrize_with_checks


@parametrize_with_checks(["example_plugin"])
def test_example_plugin_meets_the_contract(case):
    case.run()
