"""CLI error handling: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

from typing import Any

import click
import pydantic

from testbed._errors import TestbedError, first_error


class TestbedGroup(click.Group):
    """A click group that reports ``TestbedError`` as one line, with no traceback."""

    __test__ = False

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TestbedError as error:
            raise click.ClickException(str(error)) from None
        except BaseExceptionGroup as group:
            # Errors raised inside task groups (servers, runs) arrive wrapped; report the user error inside.
            user_error = _first_testbed_error(group)
            if user_error is None:
                raise
            raise click.ClickException(str(user_error)) from None
        except pydantic.ValidationError as error:
            located = first_error(error)
            raise click.ClickException(str(located) if located.loc else f"{error.title}: {located}") from None


def _first_testbed_error(group: BaseExceptionGroup[BaseException]) -> TestbedError | None:
    for error in group.exceptions:
        if isinstance(error, TestbedError):
            return error
        if isinstance(error, BaseExceptionGroup):
            found = _first_testbed_error(error)
            if found is not None:
                return found
    return None
