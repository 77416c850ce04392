"""The ``normgrad`` command line.

Subcommands import what they need when they run, so ``normgrad --help`` stays fast and the
core never imports the command line.
"""

from __future__ import annotations

import argparse
import sys

import normgrad

DESCRIPTION = """\
normgrad: batch, layer, group and instance normalization with exact forward and
backward passes, derived three ways (staged graph, closed form, numerical) and
checked against each other and against PyTorch."""


def _cmd_verify(args: argparse.Namespace) -> int:
    from normgrad import verify
    from normgrad.torch_reference import torch_available

    use_torch = torch_available() and not args.no_torch
    print(verify.header(use_torch), flush=True)
    section = None

    def show(row: verify.Row) -> None:
        nonlocal section
        if row.section != section:
            section = row.section
            print("\n" + verify.section_header(section), flush=True)
        print(verify.format_row(row), flush=True)

    rows = verify.run_verify(seed=args.seed, use_torch=use_torch, on_row=show)
    failed = [r for r in rows if not r.passed]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        try:
            with open(args.json, "w") as fh:
                fh.write(verify.rows_to_json(rows))
        except OSError as exc:
            print(
                f"normgrad verify: cannot write --json {args.json}: {exc.strerror}", file=sys.stderr
            )
            return 2
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="normgrad",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"normgrad {normgrad.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "verify",
        help="check every op and layout: staged vs closed form vs numerical vs PyTorch",
        description=(
            "Run every normalization op in every layout and variance convention, and print\n"
            "the relative error of the staged backward against the closed form, of the\n"
            "closed form against central differences, and of both passes against PyTorch\n"
            "(when installed); then seeds 000-002 against the library and the precision\n"
            "checks. Exits 1 if any check fails."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs (default 0)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparisons")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.set_defaults(func=_cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
