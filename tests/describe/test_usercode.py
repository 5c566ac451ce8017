"""How a user's error and a user's bad return are named: once, with where."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import pytest

from hybridcheck.describe.returns import BadReturn, checked_loss
from hybridcheck.describe.usercode import UserCodeError, call, defined_at, format_error


def _raises_multiline(params, batch):
    # joined at run time: the traceback also shows this source line
    raise ValueError("\n".join(["first line of it", "second" + " line", "third"]))


def test_a_message_of_several_lines_is_said_once_where_the_traceback_ends():
    with pytest.raises(UserCodeError) as info:
        call("c", "loss", _raises_multiline, None, None)
    headline = str(info.value)
    assert "first line of it [...]" in headline
    assert "second line" not in headline
    assert "test_usercode.py" in headline  # where it was raised
    shown = f"{headline}\n{format_error(info.value)}"
    assert shown.count("second line") == 1  # the traceback's last line, whole


def _vector_loss(params, batch):
    return jnp.ones(3)


class _Loss:
    def __call__(self, params, batch):
        return jnp.ones(3)


@pytest.mark.parametrize(
    "loss", [_vector_loss, functools.partial(_vector_loss), _Loss()]
)
def test_a_loss_that_returns_no_scalar_is_named_with_where_it_is_defined(loss):
    with pytest.raises(BadReturn, match=r"the user's loss \(test_usercode\.py:\d+"):
        checked_loss("c", loss)(None, None)


def test_code_that_is_not_the_users_has_no_site():
    assert defined_at(jnp.mean) == ""
    assert defined_at(len) == ""
