"""The ``nabla`` command.

Each audience's commands live in their own module and register on ``main``;
heavy imports (Flask, SQLAlchemy, the sandbox) happen inside the commands so
that ``nabla problems ...`` stays fast.
"""

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Nabla: auto-graded backpropagation exercises."""


def _register() -> None:
    import importlib

    for name in ("engine_cmds", "sandbox_cmds", "web_cmds", "bank_cmds", "grades_cmds",
                 "recovery_cmds"):
        try:
            importlib.import_module(f"server.cli.{name}")
        except ModuleNotFoundError as exc:  # a module not written yet
            if exc.name != f"server.cli.{name}":
                raise


_register()
