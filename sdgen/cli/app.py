"""The ``sdgen`` group and its entry point: every error is one line on stderr; usage
errors exit with 2, failures with 1 (some images failed: 3) and an interrupt with 130."""

from __future__ import annotations

import sys
import traceback

import click

from .. import __version__
from ..errors import SdgenError
from .generate import generate
from .models import import_command, models_command
from .tokens import tokens_command

EXIT_INTERRUPTED = 130


class DefaultCommandGroup(click.Group):
    """A group where ``sdgen "prompt" ...`` means ``sdgen generate "prompt" ...``."""

    default_command = "generate"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "--version"):
            # a prompt that happens to be a command name needs `sdgen generate "models"`
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=DefaultCommandGroup,
    context_settings={"help_option_names": ["--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="sdgen", message="%(prog)s %(version)s")
def cli():
    """Generate images from text with Stable Diffusion on keras-cv.

    \b
      sdgen "photograph of an astronaut riding a horse" --steps 50 --out astronaut.png
      sdgen --model tiny "smoke test" --width 128 --height 128 --steps 4 --outdir out

    `sdgen PROMPT ...` is short for `sdgen generate PROMPT ...`; see `sdgen generate --help`.
    """


cli.add_command(generate)
cli.add_command(import_command)
cli.add_command(models_command)
cli.add_command(tokens_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sdgen`` script and ``python -m sdgen``."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args  # full tracebacks; every command that may fail takes it
    try:
        code = cli.main(args=args, prog_name="sdgen", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        code = exit_.exit_code
    except click.ClickException as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        code = error.exit_code
    except SdgenError as error:
        if debug:
            traceback.print_exc()
        click.echo(f"Error: {error}", err=True)
        code = error.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("\nError: interrupted; finished images were kept", err=True)
        code = EXIT_INTERRUPTED
    except Exception as error:  # a bug: still one line unless --debug
        if debug:
            traceback.print_exc()
        click.echo(
            f"Error: unexpected {type(error).__name__}: {error} (run with --debug for details)",
            err=True,
        )
        code = 1
    sys.exit(code or 0)
