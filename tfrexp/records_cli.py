"""The `tfrexp-records` command: `verify` reads every record of a version against its manifest (non-zero exit
if a shard is bad), `inspect` shows what a version holds (tfrexp.records.verify does both).

A folder that is not there is told at once, before TensorFlow loads; TensorFlow is then imported as a run
imports it, its C++ start-up lines held back (tfrexp.training.backend).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tfrexp.errors import RecordsError, exit_with_error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tfrexp-records", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check every record's CRC and the counts; non-zero exit if bad")
    verify.add_argument("versions", nargs="+", type=Path, help="record version folders (holding manifest.json)")
    inspect = commands.add_parser("inspect", help="counts, sizes, schema and a few decoded examples")
    inspect.add_argument("version", type=Path)
    inspect.add_argument("--examples", type=int, default=3)
    args = parser.parse_args(argv)
    folders = [args.version] if args.command == "inspect" else args.versions
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:
        exit_with_error(f"no such folder: {', '.join(missing)}", "tfrexp-records")

    from tfrexp.config.schema import TrainerConfig
    from tfrexp.records import verify as records
    from tfrexp.training.backend import prepare_backend

    prepare_backend(TrainerConfig())
    try:
        if args.command == "inspect":
            records.inspect(args.version, args.examples)
            return
        bad = 0
        for version in args.versions:
            for check in records.verify_version(version):
                status = "ok " if check.problem is None else "BAD"
                detail = f"{check.found} records" if check.problem is None else check.problem
                print(f"{status} {version / check.file}: {detail}")
                bad += check.problem is not None
        print(f"{'all shards ok' if not bad else f'{bad} bad shard(s)'}")
        if bad:
            print("rebuild with: tfrexp ... writer.force=true", file=sys.stderr)
            sys.exit(1)
    except RecordsError as error:
        exit_with_error(error, "tfrexp-records")


if __name__ == "__main__":
    main()
