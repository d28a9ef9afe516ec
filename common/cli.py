"""absl helpers shared by every command-line program.

The originals spell the same flags differently (AAF: `--batch-size`, SegSort/PSA/A2GNN: `--batch_size`). Our flags
are defined with underscores; `run_app` accepts either spelling by rewriting hyphens in flag names before absl
parses them.
"""
import sys

from absl import app


def normalize_flag_names(argv):
    """Rewrites `--some-flag[=v]` as `--some_flag[=v]` (values untouched; `--` ends flag processing).

    Args:
      argv: list of command-line tokens (argv[0] is the program).
    Returns:
      a new list.
    """
    out = list(argv[:1])
    passthrough = False
    for token in argv[1:]:
        if passthrough or not token.startswith('--') or token == '--':
            passthrough = passthrough or token == '--'
            out.append(token)
            continue
        name, sep, value = token[2:].partition('=')
        out.append('--' + name.replace('-', '_') + sep + value)
    return out


def run_app(main, argv=None):
    """`absl.app.run(main)` accepting hyphenated and underscored flag names alike."""
    app.run(main, argv=normalize_flag_names(sys.argv if argv is None else argv))
