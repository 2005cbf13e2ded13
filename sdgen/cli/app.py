"""The ``sdgen`` group and its entry point: every error is one line on stderr; usage
errors exit with 2, failures with 1 (some images failed: 3) and an interrupt with 130.
With ``--json`` an error also prints ``{"error": MESSAGE, "exit_code": N}`` on stdout,
so a script that reads stdout always gets an object."""

from __future__ import annotations

import json
import sys
import traceback

import click

from .. import __version__
from ..errors import SdgenError
from .again import again_command
from .generate import generate
from .info import info_command
from .models import import_command, models_command
from .tokens import tokens_command

EXIT_INTERRUPTED = 130


class DefaultCommandGroup(click.Group):
    """A group where ``sdgen "prompt" ...`` means ``sdgen generate "prompt" ...``, and
    plain ``sdgen`` shows the group's help (exit status 0)."""

    default_command = "generate"

    def parse_args(self, ctx, args):
        if not args and not ctx.resilient_parsing:
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(0)
        if args and args[0] not in self.commands and args[0] not in _GROUP_FLAGS:
            # a prompt that happens to be a command name needs `sdgen generate "models"`
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


HELP_OPTIONS = ["-h", "--help"]
_GROUP_FLAGS = (*HELP_OPTIONS, "--version")


@click.group(
    cls=DefaultCommandGroup,
    context_settings={"help_option_names": HELP_OPTIONS, "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="sdgen", message="%(prog)s %(version)s")
def cli():
    """Generate images from text with Stable Diffusion on keras-cv.

    \b
      sdgen "photograph of an astronaut riding a horse" --out astronaut.png
      sdgen --model tiny "smoke test" --width 128 --height 128 --steps 4 --outdir out

    `sdgen PROMPT ...` is short for `sdgen generate PROMPT ...`; see `sdgen generate --help`.
    """


cli.add_command(generate)
cli.add_command(again_command)
cli.add_command(import_command)
cli.add_command(info_command)
cli.add_command(models_command)
cli.add_command(tokens_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sdgen`` script and ``python -m sdgen``."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args  # full tracebacks; every command that may fail takes it
    as_json = "--json" in args  # errors as JSON on stdout too, for scripts
    try:
        code = cli.main(args=args, prog_name="sdgen", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        code = exit_.exit_code
    except click.ClickException as error:
        code = _fail(error.format_message(), error.exit_code, as_json)
    except SdgenError as error:
        if debug:
            traceback.print_exc()
        code = _fail(str(error), error.exit_code, as_json)
    except click.Abort:
        # click has ended the line (the terminal's ^C, or a progress bar) already
        code = _fail(_INTERRUPTED, EXIT_INTERRUPTED, as_json)
    except KeyboardInterrupt:  # outside click's main: nothing has ended the line
        click.echo(err=True)
        code = _fail(_INTERRUPTED, EXIT_INTERRUPTED, as_json)
    except Exception as error:  # a bug: still one line unless --debug
        if debug:
            traceback.print_exc()
        message = f"unexpected {type(error).__name__}: {error} (run with --debug for details)"
        code = _fail(message, 1, as_json)
    sys.exit(code or 0)


_INTERRUPTED = "interrupted; finished images were kept"


def _fail(message: str, exit_code: int, as_json: bool) -> int:
    """Report an error: one line on stderr and, with ``--json``, an object on stdout."""
    click.echo(f"Error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": exit_code}, ensure_ascii=False))
    return exit_code
