"""``python -m platform.data``: convert public datasets, write the synthetic one, check a dataset.

    python -m platform.data convert FORMAT SRC DST [--image-root DIR] [--embed-images]
    python -m platform.data synth --out DIR [--n-per-source N] [--imbalance R] ...
    python -m platform.data check PATH [--split SPLIT]

Formats: see ``envs.clinical.convert.CONVERTERS`` (``convert --help`` lists them). Output is
validated against the schema of ``envs.clinical.dataset`` and written atomically; bad input
prints ``error: ...`` naming the file, row and column, and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from platform.cli import parser, run_main

from base.errors import UsageError


def _build_parser() -> argparse.ArgumentParser:
    from envs.clinical.convert import CONVERTERS
    from envs.clinical.synth import DEFAULT_HARD_GROUPS, GROUPS, SOURCES

    p = parser("python -m platform.data", __doc__.split("\n")[0].split(": ", 1)[1])
    sub = p.add_subparsers(dest="command", required=True, metavar="{convert,synth,check}")

    c = sub.add_parser("convert", help="convert a public dataset's metadata to the schema",
                       description="Formats:\n" + "\n".join(
                           f"  {n:<13} {CONVERTERS.help(n)}" for n in CONVERTERS.names()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("format", metavar="FORMAT", help=f"one of {CONVERTERS.names()}")
    c.add_argument("src", metavar="SRC", type=Path, help="metadata CSV, or the dataset folder")
    c.add_argument("dst", metavar="DST", type=Path,
                   help="output .parquet file, or a folder (writes DST/data.parquet)")
    c.add_argument("--image-root", type=Path, default=None,
                   help="extra folder to search for images (default: SRC's folder)")
    c.add_argument("--embed-images", action="store_true",
                   help="copy image bytes into the parquet file (default: keep local paths)")
    c.add_argument("--seed", type=int, default=0, help="seed of the per-patient split hash")

    s = sub.add_parser("synth", help="write the built-in synthetic dataset")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--n-per-source", type=int, default=120, help="rows per data source")
    s.add_argument("--sources", nargs="+", default=None, choices=list(SOURCES),
                   help="data sources (default: all)")
    s.add_argument("--image-size", type=int, default=32, help="image side in pixels")
    s.add_argument("--imbalance", type=float, default=3.0,
                   help="minority groups are sampled this many times less often (>= 1)")
    s.add_argument("--minority-groups", nargs="*", default=None, metavar="GROUP",
                   help="groups made rare (default: the hard groups)")
    s.add_argument("--hard-groups", nargs="*", default=list(DEFAULT_HARD_GROUPS),
                   metavar="GROUP", help=f"groups with a weaker label signal; from {list(GROUPS)}")
    s.add_argument("--hard-strength", type=float, default=0.3,
                   help="label-signal strength of hard groups (1 = as easy as the others)")
    s.add_argument("--missing-rate", type=float, default=0.1,
                   help="share of rows whose sex and/or age is missing")
    s.add_argument("--seed", type=int, default=0)

    k = sub.add_parser("check", help="validate a dataset and print rows per split and group")
    k.add_argument("path", metavar="PATH", type=Path, help=".parquet file or folder of them")
    k.add_argument("--split", default=None, help="only this split (error if it is empty)")
    k.add_argument("--group-attributes", nargs="+", default=["sex", "age_band"])
    return p


def _destination(dst: Path) -> Path:
    if dst.suffix == ".parquet":
        return dst
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"DST {dst}: exists and is neither a folder nor a .parquet file")
    return dst / "data.parquet"


def _convert(a: argparse.Namespace) -> int:
    from base.registry import RegistryError
    from envs.clinical.convert import CONVERTERS
    from envs.clinical.dataset import save_dataset

    try:
        fn = CONVERTERS.get(a.format)
    except RegistryError as exc:
        raise UsageError(f"FORMAT: {exc}") from None
    df = fn(a.src, image_root=a.image_root, embed_images=a.embed_images, seed=a.seed)
    out = save_dataset(df, _destination(a.dst))
    print(json.dumps({"written": str(out), "rows": len(df),
                      "splits": df["split"].value_counts().to_dict()}))
    return 0


def _synth(a: argparse.Namespace) -> int:
    from envs.clinical.synth import write_synthetic

    out = write_synthetic(a.out, n_per_source=a.n_per_source, sources=a.sources,
                          image_size=a.image_size, imbalance=a.imbalance,
                          minority_groups=a.minority_groups, hard_groups=a.hard_groups,
                          hard_strength=a.hard_strength, missing_rate=a.missing_rate, seed=a.seed)
    print(json.dumps({"written": str(out / "data.parquet")}))
    return 0


def _check(a: argparse.Namespace) -> int:
    from envs.clinical.dataset import group_keys, load_dataset

    df = load_dataset(a.path, split=a.split)
    groups = group_keys(df, a.group_attributes)
    print(json.dumps({"rows": len(df), "splits": df["split"].value_counts().to_dict(),
                      "data_sources": df["data_source"].value_counts().to_dict(),
                      "groups": groups.value_counts().to_dict()}, indent=2))
    return 0


COMMANDS = {"convert": _convert, "synth": _synth, "check": _check}


def main(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(run_main(main))
