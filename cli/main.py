"""The `fc` command. Each command lives in its own module and imports its heavy libraries inside
the function body, so `fc --help` only pays for typer.

Exit codes, one convention for every command: 0 done; 1 the user's mistake or the data's (a
one-line `error:` message: a bad option or path, a usage error, unusable input, a read-only or
full output file system); 128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM), after saving
what can be resumed. Anything else is a bug, with its traceback.
"""

from __future__ import annotations

import errno
import sys

import typer

from fc import bench, convert, demo, evaluate, export, masks, shard, show, synth, train

app = typer.Typer(
    name="fc",
    help="Focus-CLIP: region-aware CLIP. Visual Genome -> shards -> RGBA ViT + LoRA -> region eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command("demo")(demo.demo)
app.command("synth")(synth.synth)
app.command("shard")(shard.shard)
app.command("masks")(masks.masks)
app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)
app.command("export")(export.export)
app.command("show")(show.show)
app.command("convert")(convert.convert)
app.add_typer(bench.app, name="bench")

# OS errors whose cause is the user's file system, not this program: reported as one line.
USER_OS_ERRORS = {
    errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EISDIR, errno.ENOTDIR,
    errno.EEXIST, errno.ENAMETOOLONG,
}


try:  # typer >= 0.2x carries its own click, whose errors derive from TyperException
    from typer import TyperException as _CLICK_ERRORS
except ImportError:  # older typer: click's own
    from click.exceptions import ClickException as _CLICK_ERRORS


def main() -> None:
    """Console entry point: runs the app under the exit-code convention of the module docstring."""
    from fcdata.errors import Interrupted, UserError
    from fcdata.outputs import describe_os_error

    try:
        code = app(standalone_mode=False)
    except UserError as exc:
        _fail(str(exc))
    except _CLICK_ERRORS as exc:  # usage errors: typer's format, our exit code
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        sys.exit(1)
    except typer.Abort:
        _fail("aborted")
    except Interrupted as exc:
        _fail(f"interrupted by {exc.name}", 128 + exc.number)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as exc:
        if exc.errno not in USER_OS_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{describe_os_error(exc)}")
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.exit(code)
