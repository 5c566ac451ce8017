"""The bad-input corpus of issue 21 ("The gate's edges and its report"), item 6.

One table of rows, each a bad input (or misbehaving user code) and what the gate must
do with it: the exit code (``EXIT_CODES``), the field or party the output names, a
budget of lines for the whole output, and no traceback through hybridcheck's own
frames. Two kinds of rows:

* ``API_ROWS``: the Python API (``hc.HybridCase``, ``hc.from_nnx``,
  ``hc.MigrationCase``, ``hc.verify``), in process: a bad field or argument raises
  ``TypeError``/``ValueError`` at the call, naming the argument, in a few lines.
* ``CLI_ROWS``: ``python -m hybridcheck verify`` (or the console script) on a user's
  case file generated into ``tmp_path`` from one correct tiny case
  (``badinputs/template.py``): process exits, hangs, bad returns, bad batches,
  unwritable outputs, bad options and bad targets, where the exit code is the point.

Every row states the behaviour issue 21 asks for ("What to build", "Done when"), not
what the product does today. Rows that fail are the work left.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest

import hybridcheck as hc
from tests.entrypoints import (
    test_bad_cli_exits,
    test_bad_cli_hangs,
    test_bad_cli_options,
    test_bad_cli_returns,
)
from tests.entrypoints.badinputs.cli_rows import (
    API_LINE_BUDGET,
    CLI_ROWS,
    DUPLICATE,
    EXIT_CODES,
    _search,
)
from tests.entrypoints.badinputs.template import render

pytestmark = pytest.mark.corpus

# --------------------------------------------------------------------- Python API


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The rendered correct case file, imported once (``base.CASE``, ``base.KWARGS``,
    ``base.NNX_KWARGS``, ``base.my_step`` ...)."""
    import importlib.util

    path = tmp_path_factory.mktemp("badinputs") / "badinput_base_case.py"
    path.write_text(render())
    spec = importlib.util.spec_from_file_location("badinput_base_case", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass(frozen=True)
class ApiRow:
    """A call that must raise TypeError/ValueError naming every pattern in
    ``names``. With ``report_ok_false``, a call that returns instead must return a
    report that is not ok, and the report's text is what must name them."""

    id: str
    call: Callable[[Any], Any]
    names: tuple[str, ...]
    report_ok_false: bool = False


def _api(id: str, call: Callable[[Any], Any], *names: str, **kwargs: Any) -> Any:
    return pytest.param(ApiRow(id, call, names, **kwargs), id=id)


def _case(**changes: Any) -> Callable[[Any], Any]:
    return lambda b: hc.HybridCase(**{**b.KWARGS, **changes})


def _extra(params: Any, batch: Any, lr: Any) -> None:
    """An extra check of the user's (it never fails)."""


def _verify(cases: Callable[[Any], Any] | None = None, **kwargs: Any) -> Any:
    def call(b: Any) -> Any:
        chosen = b.CASE if cases is None else cases(b)
        options = {"profile": "dev", "invariants": ["all_finite"], **kwargs}
        return hc.verify(chosen, **options)

    return call


def _from_nnx(**changes: Any) -> Callable[[Any], Any]:
    return lambda b: hc.from_nnx("tiny-nnx", **{**b.NNX_KWARGS, **changes})


def _migration(**changes: Any) -> Callable[[Any], Any]:
    def call(b: Any) -> Any:
        fields = {
            "name": "tiny-migration",
            "before": b.CASE,
            "after": b.CASE,
            "convert": lambda params: params,
            **changes,
        }
        return hc.MigrationCase(**fields)

    return call


def _twin(b: Any) -> Any:
    return [b.CASE, dataclasses.replace(b.CASE, description="the same name")]


def _wrong(value: Any) -> Any:
    """``value``, typed Any: a deliberately wrong argument."""
    return value


NAN = math.nan
INF = math.inf

API_ROWS = [
    # HybridCase fields: type-checked at construction, the field named.
    _api("case-name-int", _case(name=3), r"\bname\b"),
    _api("case-name-empty", _case(name=""), r"\bname\b"),
    _api("case-init-none", _case(init=None), r"\binit\b"),
    _api("case-init-int", _case(init=3), r"\binit\b"),
    _api("case-loss-string", _case(loss="my_loss"), r"\bloss\b"),
    _api("case-loss-none", _case(loss=None), r"\bloss\b"),
    _api("case-batches-none", _case(batches=None), r"\bbatches\b"),
    _api("case-batches-list", _case(batches=[1, 2]), r"\bbatches\b"),
    _api("case-batches-tuple-of-arrays", _case(batches=((1.0,), (2.0,))), "batches"),
    _api("case-step-int", _case(step=3), r"\bstep\b"),
    _api("case-halves-string", _case(halves="nnx"), r"\bhalves\b"),
    _api("case-halves-duplicate", _case(halves=("nnx", "nnx")), r"\bhalves\b"),
    _api("case-halves-int", _case(halves=3), r"\bhalves\b"),
    _api("case-non_trainable-string", _case(non_trainable="linen"), "non_trainable"),
    _api("case-non_trainable-int", _case(non_trainable=3), "non_trainable"),
    _api("case-lr-string", _case(lr="0.1"), r"\blr\b"),
    _api("case-lr-negative", _case(lr=-0.1), r"\blr\b"),
    _api("case-lr-zero", _case(lr=0.0), r"\blr\b"),
    _api("case-lr-nan", _case(lr=NAN), r"\blr\b"),
    _api("case-lr-inf", _case(lr=INF), r"\blr\b"),
    _api("case-lr-bool", _case(lr=True), r"\blr\b"),
    _api("case-lr-list", _case(lr=[0.1]), r"\blr\b"),
    _api("case-sgd-string", _case(sgd="no"), r"\bsgd\b"),
    _api("case-sgd-int", _case(sgd=1), r"\bsgd\b"),
    _api("case-frozen-bool", _case(frozen=True), r"\bfrozen\b"),
    _api("case-frozen-pattern-string", _case(frozen="nnx/*"), r"\bfrozen\b"),
    _api("case-extra_checks-list", _case(extra_checks=[_extra]), "extra_checks"),
    _api("case-extra_checks-function", _case(extra_checks=_extra), "extra_checks"),
    _api(
        "case-extra_checks-value-int", _case(extra_checks={"mine": 3}), "extra_checks"
    ),
    _api(
        "case-extra_checks-key-int",
        _case(extra_checks={3: _extra}),
        "extra_checks",
    ),
    _api(
        "case-extra_checks-shadows-an-invariant",
        _case(extra_checks={"all_finite": _extra}),
        "extra_checks",
        "all_finite",
    ),
    _api("case-param_seeds-string", _case(param_seeds="8"), "param_seeds"),
    _api("case-param_seeds-zero", _case(param_seeds=0), "param_seeds"),
    _api("case-param_seeds-negative", _case(param_seeds=-1), "param_seeds"),
    _api("case-param_seeds-float", _case(param_seeds=2.5), "param_seeds"),
    _api("case-param_seeds-bool", _case(param_seeds=True), "param_seeds"),
    _api("case-description-int", _case(description=3), r"\bdescription\b"),
    _api("case-state_fn-int", _case(state_fn=3), r"\bstate_fn\b"),
    _api("case-reseed-string", _case(reseed="x"), r"\breseed\b"),
    _api("case-rng_halves-string", _case(rng_halves="rng"), r"\brng_halves\b"),
    _api("case-tx-int", _case(tx=3), r"\btx\b"),
    _api(
        "case-tx-an-optimizer-not-a-function-of-lr",
        lambda b: hc.HybridCase(**{**b.KWARGS, "tx": b.optax.sgd(0.1)}),
        r"\btx\b",
    ),
    _api("case-partition_specs-int", _case(partition_specs=3), "partition_specs"),
    _api("case-misspelt-field", _case(sdg=True), r"\bsdg\b"),
    # hc.verify's arguments.
    _api(
        "verify-none", lambda b: hc.verify(_wrong(None), profile="dev"), r"\bcases?\b"
    ),
    _api("verify-int", lambda b: hc.verify(_wrong(3), profile="dev"), r"\bcases?\b"),
    _api(
        "verify-empty-list",
        lambda b: hc.verify([], profile="dev"),
        r"no case|nothing|empty",
        report_ok_false=True,
    ),
    _api(
        "verify-a-name",
        lambda b: hc.verify(_wrong("tiny"), profile="dev"),
        r"\bcases?\b",
    ),
    _api("verify-list-with-none", _verify(lambda b: [b.CASE, None]), r"\bcases?\b"),
    _api(
        "verify-same-case-twice",
        _verify(lambda b: [b.CASE, b.CASE]),
        "tiny",
        DUPLICATE,
    ),
    _api(
        "verify-two-cases-one-name",
        _verify(_twin),
        "tiny",
        DUPLICATE,
    ),
    _api("verify-invariants-string", _verify(invariants="all_finite"), "invariants"),
    _api(
        "verify-invariants-unknown",
        _verify(invariants=["no_such_invariant"]),
        "no_such_invariant",
    ),
    _api("verify-invariants-empty", _verify(invariants=[]), "invariants"),
    _api("verify-invariants-int", _verify(invariants=[3]), "invariants"),
    _api(
        "verify-invariant-that-does-not-apply",
        _verify(invariants=["roundtrip"]),
        "roundtrip",
        report_ok_false=True,
    ),
    _api("verify-progress-string", _verify(progress="yes"), r"\bprogress\b"),
    _api("verify-progress-int", _verify(progress=3), r"\bprogress\b"),
    _api("verify-profile-unknown", _verify(profile="fastest"), r"\bprofile\b"),
    _api("verify-profile-none", _verify(profile=None), r"\bprofile\b"),
    _api("verify-shrink-negative", _verify(shrink_seconds=-1), "shrink_seconds"),
    _api("verify-shrink-string", _verify(shrink_seconds="10"), "shrink_seconds"),
    _api("verify-shrink-nan", _verify(shrink_seconds=NAN), "shrink_seconds"),
    _api("verify-timeout-negative", _verify(timeout=-1), r"\btimeout\b"),
    _api("verify-timeout-nan", _verify(timeout=NAN), r"\btimeout\b"),
    _api("verify-timeout-inf", _verify(timeout=INF), r"\btimeout\b"),
    _api("verify-timeout-string", _verify(timeout="10"), r"\btimeout\b"),
    # hc.from_nnx: its own fields, and the HybridCase fields it sets itself.
    _api("from_nnx-loss-beside-loss_fn", _from_nnx(loss=len), r"\bloss_fn\b"),
    _api("from_nnx-init-beside-model_fn", _from_nnx(init=len), r"\bmodel_fn\b"),
    _api("from_nnx-step-beside-train_step", _from_nnx(step=len), r"\btrain_step\b"),
    _api(
        "from_nnx-model_fn-an-instance",
        lambda b: hc.from_nnx(
            "tiny-nnx", **{**b.NNX_KWARGS, "model_fn": b.Model(b.nnx.Rngs(0))}
        ),
        r"\bmodel_fn\b",
    ),
    _api("from_nnx-model_fn-int", _from_nnx(model_fn=3), r"\bmodel_fn\b"),
    _api(
        "from_nnx-tx-an-optimizer-not-a-function-of-lr",
        lambda b: hc.from_nnx("tiny-nnx", **{**b.NNX_KWARGS, "tx": b.optax.sgd(0.1)}),
        r"\btx\b",
    ),
    _api("from_nnx-train_step-none", _from_nnx(train_step=None), r"\btrain_step\b"),
    _api("from_nnx-loss_fn-none", _from_nnx(loss_fn=None), r"\bloss_fn\b"),
    _api("from_nnx-batches-none", _from_nnx(batches=None), r"\bbatches\b"),
    _api(
        "from_nnx-name-none",
        lambda b: hc.from_nnx(_wrong(None), **b.NNX_KWARGS),
        r"\bname\b",
    ),
    _api(
        "from_nnx-model_fn-without-lazy_init",
        lambda b: hc.verify(
            hc.from_nnx("tiny-nnx", **{**b.NNX_KWARGS, "model_fn": b.Model}),
            profile="dev",
            invariants=["all_finite"],
        ),
        r"lazy_init",
        report_ok_false=True,
    ),
    # hc.MigrationCase.
    _api("migration-before-none", _migration(before=None), r"\bbefore\b"),
    _api("migration-after-int", _migration(after=3), r"\bafter\b"),
    _api("migration-convert-string", _migration(convert="x"), r"\bconvert\b"),
    _api("migration-invert-int", _migration(invert=3), r"\binvert\b"),
    _api("migration-steps-zero", _migration(steps=0), r"\bsteps\b"),
    _api("migration-steps-string", _migration(steps="3"), r"\bsteps\b"),
    _api("migration-steps-float", _migration(steps=2.5), r"\bsteps\b"),
]

# Said by a report that blames us or the wrong party for a bad argument.
API_FORBID = (r"put a Linen module in bridge\.ToNNX", r"multiple values for keyword")


@pytest.mark.parametrize("row", API_ROWS)
def test_api_row(row: ApiRow, base: Any) -> None:
    try:
        returned = row.call(base)
    except (TypeError, ValueError) as exc:
        text = str(exc)
        if len(text.splitlines()) > API_LINE_BUDGET:
            pytest.fail(f"{row.id}: {len(text.splitlines())} lines:\n{text}")
    except Exception as exc:  # noqa: BLE001 - any other exception is the finding
        first = (str(exc).splitlines() or [""])[0]
        pytest.fail(
            f"{row.id}: raised {type(exc).__name__}, not TypeError/ValueError: "
            f"{first[:300]}"
        )
    else:
        if not row.report_ok_false:
            pytest.fail(
                f"{row.id}: accepted (returned {type(returned).__name__}); expected "
                f"TypeError/ValueError naming {' and '.join(row.names)}"
            )
        if not isinstance(returned, hc.Report):
            pytest.fail(f"{row.id}: returned {type(returned).__name__}")
        text = returned.table()
        if returned.ok:
            pytest.fail(f"{row.id}: a run that checked nothing is ok:\n{text}")
    for pattern in row.names:
        if not _search(pattern, text):
            first = (text.splitlines() or [""])[0]
            pytest.fail(f"{row.id}: /{pattern}/ not named: {first[:300]}\n{text}")
    for pattern in API_FORBID:
        if _search(pattern, text):
            pytest.fail(f"{row.id}: says /{pattern}/:\n{text}")


def test_the_corpus_has_at_least_100_rows() -> None:
    assert len(CLI_ROWS) + len(API_ROWS) >= 100
    files = (test_bad_cli_exits, test_bad_cli_hangs, test_bad_cli_options)
    split = [r.id for f in (*files, test_bad_cli_returns) for r in f.ROWS]
    assert sorted(split) == sorted(r.id for r in CLI_ROWS), "a CLI row in no file"
    ids = [p.id for p in (*CLI_ROWS, *API_ROWS)]
    assert len(ids) == len(set(ids)), "row ids repeat"
    assert sorted(set(EXIT_CODES.values())) == [0, 1, 2, 3, 4, 5]


def test_the_base_case_is_correct(base: Any) -> None:
    """Control: the file every row bends passes, in process, under the API."""
    report = hc.verify(
        base.CASE,
        profile="dev",
        invariants=["grads_match_params", "update_is_descent", "all_finite"],
    )
    assert report.ok, report.table()
    hc.from_nnx("tiny-nnx", **base.NNX_KWARGS)
    hc.MigrationCase("tiny-migration", base.CASE, base.CASE, lambda p: p)
