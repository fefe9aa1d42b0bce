"""The Python API: keyword-only settings, one keyword per check with its options class, clear errors."""

from __future__ import annotations

import doctest
import warnings

import pytest

import cnnaudit
from cnnaudit.checks.adversarial import AdversarialOptions
from cnnaudit.errors import AuditError
from cnnaudit.options import OptionError


def test_docstring_examples_run():
    failures, tried = doctest.testmod(cnnaudit, extraglobs={"cnnaudit": cnnaudit})
    assert tried >= 3 and failures == 0


def test_check_options_by_keyword_match_the_old_options_dict(eager_model, digits_dir):
    opts = AdversarialOptions(norms=("linf",), eps={"linf": ["1/10"]})
    new = cnnaudit.audit(eager_model, digits_dir, checks=["adversarial"], limit=30, adversarial=opts).summary
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = cnnaudit.audit(eager_model, digits_dir, checks=["adversarial"], limit=30,
                             options={"adversarial": {"norms": ("linf",), "eps": {"linf": [0.1]}}}).summary
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    strip = lambda s: {k: v for k, v in s.items() if k not in ("timing", "config")}  # noqa: E731
    assert strip(new) == strip(old)


def test_typos_are_one_clear_error(eager_model, digits_dir):
    with pytest.raises(AuditError, match="no setting 'limt'"):
        cnnaudit.audit(eager_model, digits_dir, limt=10)
    with pytest.raises(AuditError, match="the adversarial check has no option"):
        cnnaudit.audit(eager_model, digits_dir, checks=["adversarial"], adversarial={"epsilon": 0.1})
    with pytest.raises(OptionError, match="the adversarial option 'eps' has 'a/b': give a number"):
        cnnaudit.audit(eager_model, digits_dir, checks=["adversarial"], adversarial={"eps": {"linf": ["a/b"]}})
